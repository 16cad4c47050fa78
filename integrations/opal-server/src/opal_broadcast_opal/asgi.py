"""``uvicorn opal_broadcast_opal.asgi:app``: OPAL server's app, on opal-broadcast."""

from . import install

install()

from opal_server.main import app  # noqa: E402 - must follow install()

__all__ = ["app"]
