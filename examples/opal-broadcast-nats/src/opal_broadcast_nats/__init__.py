"""opal-broadcast-nats: the NATS backbone for opal-broadcast (``nats://host:4222``).

Installing the distribution is all it takes: the core finds the plugin through the
``opal_broadcast`` entry point (``opal_broadcast_nats.plugin``). Nothing here is needed at run time;
the package is imported by name only for its version.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
