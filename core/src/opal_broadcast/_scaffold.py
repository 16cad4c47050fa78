"""``opal-broadcast new-plugin NAME``: a plugin package that installs, is discovered, and runs
the conformance kit on its first try, failing only where the author has work left."""

from __future__ import annotations

import re
from pathlib import Path

from ._contract import CONTRACT_VERSION
from ._errors import ConfigurationError

__all__ = ["write_plugin"]

GUIDE = "docs/plugin-authors.md"
#: A URL scheme that is also a distribution name: letters, digits, single '-' between them.
_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*\Z")

_PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[project]
name = "opal-broadcast-{dash}"
version = "0.1.0"
description = "The {name}:// backbone for opal-broadcast."
readme = "README.md"
requires-python = ">=3.10"
dependencies = [
    "opal-broadcast>=0.1,<0.2",
    # your driver here, with the versions you test against
]

[project.optional-dependencies]
test = ["opal-broadcast[testing]>=0.1,<0.2", "anyio>=4.11", "pytest>=8.0"]

# How the core finds the plugin: the declaring module (plugin contract {contract}).
[project.entry-points.opal_broadcast]
{name} = "opal_broadcast_{module}.plugin"

[tool.hatch.build.targets.wheel]
packages = ["src/opal_broadcast_{module}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = ["-ra", "--strict-markers"]
"""

_README = """\
# opal-broadcast-{dash}

The `{name}://` backbone for [opal-broadcast](https://pypi.org/project/opal-broadcast/).

Written from `opal-broadcast new-plugin {name}`: every method of the connection class raises
`NotImplementedError` naming the section of the plugin authors' guide ({guide}) that says what
to write. Run the conformance kit to see what is left:

    pip install --find-links <folder with the opal-broadcast wheel> -e ".[test]"
    OPAL_BROADCAST_TEST_URL={name}://127.0.0.1 pytest

Say here: the URL format, every option, the delivery guarantee, the limits.
"""

_INIT = '''\
"""The {name}:// backbone for opal-broadcast."""

__version__ = "0.1.0"
'''

_PLUGIN = '''\
"""The {name}:// backbone's declaration: the module the ``opal_broadcast`` entry point names.

Imports no driver (see ``_connection``), so a missing driver cannot break other backbones.
"""

from __future__ import annotations

from opal_broadcast.plugin import CONTRACT_VERSION, BackboneInfo, hookimpl

from ._connection import {cls}

__all__ = ["opal_broadcast_backbone"]


@hookimpl
def opal_broadcast_backbone() -> BackboneInfo:
    return BackboneInfo(
        schemes=("{name}",),
        contract=CONTRACT_VERSION,
        connection={cls},
        async_libraries=("asyncio",),  # ("asyncio", "trio") only for an anyio-native driver
        summary="{name}:// (describe it in one line)",
        distribution="opal-broadcast-{dash}",
    )
'''

_OPTIONS = '''\
"""The {name}:// URL's options, checked before any I/O (see the guide: "Declare your options")."""

from __future__ import annotations

from opal_broadcast.plugin import Option, Options

__all__ = ["OPTIONS"]

OPTIONS = Options(
    Option.text("client_name"),
)
'''

_CONNECTION = '''\
"""One connection to the {name}:// backbone (the plugin contract's ``Connection``).

Import the driver with ``lazy_import`` (guide: "Importing the driver lazily"): the core imports
this module when it discovers the plugin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opal_broadcast.plugin import BackboneURL, Link

from ._options import OPTIONS

__all__ = ["{cls}"]

GUIDE = "{guide}"


def _todo(section: str) -> NotImplementedError:
    return NotImplementedError(f"not written yet: see {{GUIDE}}, {{section}}")


class {cls}:
    """One connection; the core shares it between every Broadcast on the URL."""

    def __init__(self, url: BackboneURL, options: dict[str, Any], link: Link) -> None:
        self.url = url
        self.options = options
        self.link = link

    @classmethod
    async def open(cls, url: BackboneURL, options: Mapping[str, Any], link: Link) -> {cls}:
        connection = cls(url, OPTIONS.parse(url, options), link)
        raise _todo('"The connection class", open()')
        return connection

    @classmethod
    def check_channel(cls, url: BackboneURL, options: Mapping[str, Any], channel: str) -> None:
        raise _todo('"The connection class", check_channel()')

    @classmethod
    def check_message(
        cls, url: BackboneURL, options: Mapping[str, Any], channel: str, message: str | bytes
    ) -> None:
        raise _todo('"The connection class", check_message()')

    async def publish(self, channel: str, message: str | bytes) -> None:
        raise _todo('"The connection class", publish()')

    async def subscribe(self, channels: Sequence[str]) -> None:
        raise _todo('"The connection class", subscribe()')

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        raise _todo('"The connection class", unsubscribe()')

    async def probe(self) -> None:
        raise _todo('"The connection class", probe()')

    async def close(self) -> None:
        raise _todo('"The connection class", close()')
'''

_CONFORMANCE = '''\
"""The conformance kit every opal-broadcast plugin passes (guide: "Testing")."""

from __future__ import annotations

import os

import pytest

from opal_broadcast.testing import BackboneConformance

URL = os.environ.get("OPAL_BROADCAST_TEST_URL", "{name}://127.0.0.1")


class Outage:
    """Takes the server away and brings it back (guide: "The outage fixture")."""

    async def interrupt(self) -> None:
        raise NotImplementedError("not written yet: see {guide}, \\"The outage fixture\\"")

    async def restore(self) -> None:
        """Called again when every test ends: make it idempotent."""


class Test{base}Conformance(BackboneConformance):
    @pytest.fixture
    def backbone_url(self) -> str:
        return URL

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def outage(self) -> Outage:
        return Outage()
'''


def write_plugin(name: str, directory: Path) -> Path:
    """Write the package for ``name`` (the URL scheme) into ``directory``/opal-broadcast-NAME."""
    if not _NAME.match(name):
        raise ConfigurationError(
            f"{name!r} cannot name a plugin: use lower-case letters and digits, starting with a "
            "letter, with single '-' between them (it is the URL scheme and the package name)."
        )
    dash, module = name, name.replace("-", "_")
    root = directory / f"opal-broadcast-{dash}"
    if root.exists():
        raise ConfigurationError(f"{root} exists already: choose another directory.")
    base = "".join(part.capitalize() for part in name.split("-"))
    values = {
        "name": name,
        "dash": dash,
        "module": module,
        "base": base,
        "cls": base + "Connection",
    }
    values.update(guide=GUIDE, contract=str(CONTRACT_VERSION))
    package = root / "src" / f"opal_broadcast_{module}"
    files = {
        root / "pyproject.toml": _PYPROJECT,
        root / "README.md": _README,
        package / "__init__.py": _INIT,
        package / "plugin.py": _PLUGIN,
        package / "_options.py": _OPTIONS,
        package / "_connection.py": _CONNECTION,
        package / "py.typed": "",
        root / "tests" / "__init__.py": "",
        root / "tests" / "test_conformance.py": _CONFORMANCE,
    }
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values))
    return root
