"""Tools for testing opal-broadcast backbones: the conformance suite and memory faults.

A plugin passes the conformance suite with a few lines in its own tests (pytest and anyio's
pytest plugin, both installed with ``pip install opal-broadcast[testing]``)::

    import pytest
    from opal_broadcast.testing import BackboneConformance

    class TestNatsConformance(BackboneConformance):
        @pytest.fixture
        def backbone_url(self):
            return "nats://127.0.0.1:4222"

        @pytest.fixture
        def anyio_backend(self):       # only if the plugin runs on asyncio only
            return "asyncio"

        @pytest.fixture
        def outage(self):              # required: loss and recovery are part of the contract
            return MyServerOutage()    # async interrupt() and restore(), see BackboneOutage

Add :class:`FrozenLinkConformance` to the bases, with a ``freeze`` fixture (async ``freeze()``
and ``thaw()``, see :class:`BackboneFreeze`), to also prove that a frozen link is found; and
:class:`AccessControlConformance`, with a ``restricted`` fixture, for a backbone with access
control per channel.
"""

from ._conformance import BackboneConformance
from ._faults import BackboneFreeze, BackboneOutage
from ._memory import (
    MemoryOutage,
    freeze_memory,
    restore_memory,
    silence_memory,
    simulate_memory_loss,
)
from ._opt_in import AccessControlConformance, FrozenLinkConformance

__all__ = [
    "AccessControlConformance",
    "BackboneConformance",
    "BackboneFreeze",
    "BackboneOutage",
    "FrozenLinkConformance",
    "MemoryOutage",
    "freeze_memory",
    "restore_memory",
    "silence_memory",
    "simulate_memory_loss",
]
