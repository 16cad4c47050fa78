"""Redis pub/sub backbone for opal-broadcast: ``redis://``, ``rediss://`` and ``unix://`` URLs.

Installed, it is found through its entry point; there is nothing to import. See the README for
the URL forms, the options and the delivery guarantees.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
