"""Which plugin serves which scheme: entry-point discovery, explicit registration, pins.

Unlike pluggy's ``load_setuptools_entrypoints``, a plugin that fails to import is recorded and
reported instead of stopping discovery, and two plugins claiming one scheme is an error naming
both, raised only when that scheme is used, so unrelated schemes keep working.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

import pluggy

from . import _hookspecs
from ._broadcaster_backend import broadcaster_backend_info
from ._contract import CAPABILITIES, CONTRACT_VERSION, BackboneInfo, Connection, check_declaration
from ._errors import (
    ConfigurationError,
    IncompatiblePlugin,
    PluginConflict,
    PluginContractWarning,
    PluginLoadError,
    UnknownScheme,
    UnsupportedAsyncLibrary,
)
from ._hookspecs import PROJECT
from ._legacy import SUPPORTED_UNTIL, hook_connection_class

__all__ = ["Backbone", "Registry", "backbones", "default_registry", "register"]

logger = logging.getLogger("opal_broadcast")

ENTRY_POINT_GROUP = "opal_broadcast"
#: Set to 1 to load no plugin from entry points (``register()`` and ``backend=`` still work).
DISABLE_AUTOLOAD_ENV = "OPAL_BROADCAST_DISABLE_PLUGIN_AUTOLOAD"
#: ``scheme=distribution[,scheme=distribution]``: which plugin wins when several claim a scheme.
#: Read when a scheme is first resolved in the process.
PIN_ENV = "OPAL_BROADCAST_PIN"

#: The oldest contract version this core still runs (0: the nine hooks, through an adapter).
OLDEST_CONTRACT = 0
#: The hooks a contract 0 plugin must implement.
REQUIRED_HOOKS = ("opal_broadcast_connect", "opal_broadcast_publish", "opal_broadcast_subscribe")
MIGRATION_GUIDE = "docs/plugin-authors.md#migrating-from-the-hooks-contract-0"

#: First-party plugins, so an unknown-scheme error can name the exact ``pip install``.
FIRST_PARTY = {
    "redis": "opal-broadcast-redis",
    "rediss": "opal-broadcast-redis",
    "unix": "opal-broadcast-redis",
    "postgres": "opal-broadcast-postgres",
    "postgresql": "opal-broadcast-postgres",
    "postgres+asyncpg": "opal-broadcast-postgres",
    "postgresql+asyncpg": "opal-broadcast-postgres",
    "kafka": "opal-broadcast-kafka",
}


#: Schemes OPAL's or broadcaster's docs name that no first-party plugin serves.
NO_FIRST_PARTY_PLUGIN = {"pulsar": "Apache Pulsar", "redis-stream": "Redis Streams (yet)"}


@dataclass(frozen=True)
class Backbone:
    """One plugin as the registry knows it: loaded (``connection`` set) or failed (``error`` set)."""

    name: str
    distribution: str | None
    version: str | None
    info: BackboneInfo | None
    error: BaseException | None
    #: The plugin's connection class (for a contract 0 plugin, the adapter around its hooks).
    connection: type[Connection] | None = None
    #: The optional capabilities it declared that this core knows.
    capabilities: frozenset[str] = frozenset()
    #: Set for a plugin on a deprecated contract: the warning issued when its scheme is first used.
    deprecation: str | None = None

    @property
    def origin(self) -> str:
        """``distribution version`` for messages, or where it came from."""
        if self.distribution:
            return f"{self.distribution} {self.version or ''}".strip()
        return f"{self.name} (registered in-process)"

    def require_async_library(self, library: str, scheme: str) -> None:
        """Raise :class:`UnsupportedAsyncLibrary` unless the plugin runs on ``library``."""
        info = self.info
        if info is not None and library not in info.async_libraries:
            raise UnsupportedAsyncLibrary(
                f"The {scheme}:// backbone ({self.origin}) runs on "
                f"{' or '.join(info.async_libraries)} only, not {library}. Run it under "
                f"{info.async_libraries[0]} (with anyio: backend={info.async_libraries[0]!r})."
            )


class Registry:
    """Plugins by scheme. The process uses :func:`default_registry`; tests may build their own."""

    def __init__(self, *, autoload: bool = True) -> None:
        self._lock = threading.Lock()
        self._loaded = not autoload
        self._entry_point_backbones: list[Backbone] = []
        self._registered: list[Backbone] = []
        self._adopted: dict[int, tuple[object, Backbone]] = {}
        self._resolved: dict[tuple[str, str | None], Backbone] = {}

    def register(
        self,
        plugin: object,
        *,
        name: str | None = None,
        distribution: str | None = None,
        version: str | None = None,
    ) -> Backbone:
        """Register ``plugin`` in-process; it wins over entry-point plugins for its schemes."""
        name = name or _plugin_name(plugin)
        backbone = _load(plugin, name=name, distribution=distribution, version=version)
        if isinstance(backbone.error, IncompatiblePlugin):
            raise backbone.error
        if backbone.error is not None:
            raise PluginLoadError(
                f"Plugin {backbone.name!r} is invalid: {backbone.error}"
            ) from backbone.error
        assert backbone.info is not None
        with self._lock:
            for other in self._registered:
                assert other.info is not None
                taken = set(other.info.schemes) & set(backbone.info.schemes)
                if taken:
                    raise PluginConflict(
                        f"Plugin {backbone.name!r} claims {_schemes(taken)}, already registered "
                        f"in-process by {other.name!r}. Unregister one."
                    )
            self._registered.append(backbone)
            self._resolved.clear()
        return backbone

    def adopt(self, plugin: object) -> Backbone:
        """The backbone for a plugin object passed as ``Broadcast(url, backend=plugin)``."""
        cached = self._adopted.get(id(plugin))
        if cached is not None and cached[0] is plugin:
            return cached[1]
        backbone = _load(plugin, name=_plugin_name(plugin), distribution=None, version=None)
        if isinstance(backbone.error, IncompatiblePlugin):
            raise backbone.error
        if backbone.error is not None:
            raise PluginLoadError(
                f"The backend {backbone.name!r} is not a valid plugin: {backbone.error}"
            ) from backbone.error
        self._adopted[id(plugin)] = (plugin, backbone)
        if backbone.deprecation:
            warnings.warn(backbone.deprecation, PluginContractWarning, stacklevel=2)
        return backbone

    def adopt_broadcaster_backend(self, backend: object) -> Backbone:
        """The backbone for an encode/broadcaster backend object (``Broadcast(backend=obj)``)."""
        cached = self._adopted.get(id(backend))
        if cached is not None and cached[0] is backend:
            return cached[1]
        info = broadcaster_backend_info(backend)
        name = f"{type(backend).__qualname__} at {id(backend):#x}"
        backbone = Backbone(name, None, None, info, None, info.connection)
        self._adopted[id(backend)] = (backend, backbone)
        return backbone

    def unregister(self, backbone: Backbone) -> None:
        """Remove a plugin added with :meth:`register`."""
        with self._lock:
            self._registered.remove(backbone)
            self._resolved.clear()

    def backbones(self) -> list[Backbone]:
        """Every plugin known, loaded or failed, in-process ones first."""
        self._autoload()
        return [*self._registered, *self._entry_point_backbones]

    def schemes(self) -> list[str]:
        """Every scheme some loaded plugin serves."""
        return sorted({s for b in self.backbones() if b.info for s in b.info.schemes})

    def resolve(self, scheme: str, pin: str | None = None) -> Backbone:
        """The one plugin that serves ``scheme``; ``pin`` (distribution or name) picks among many."""
        key = (scheme, pin)
        backbone = self._resolved.get(key)
        if backbone is None:
            backbone = self._resolved[key] = self._resolve(scheme, pin)
            if backbone.deprecation:
                warnings.warn(backbone.deprecation, PluginContractWarning, stacklevel=2)
        return backbone

    def _resolve(self, scheme: str, pin: str | None) -> Backbone:
        pin = pin or _pins().get(scheme)
        for backbone in self._registered:
            if backbone.info and scheme in backbone.info.schemes and pin in (None, backbone.name):
                return backbone
        self._autoload()
        claims = [b for b in self._entry_point_backbones if b.info and scheme in b.info.schemes]
        if pin is not None:
            pinned = [b for b in claims if pin in (b.name, b.distribution)]
            if not pinned:
                raise ConfigurationError(
                    f"The plugin pinned for {scheme}:// ({pin!r}) is not installed or does not "
                    f"serve {scheme}://. Plugins serving it: "
                    f"{', '.join(b.origin for b in claims) or 'none'}."
                )
            claims = pinned
        if len(claims) == 1:
            return claims[0]
        if claims:
            claims.sort(key=lambda b: b.origin)
            names = " and ".join(b.origin for b in claims)
            raise PluginConflict(
                f"Several installed plugins claim {scheme}://: {names}. Uninstall one, or pin "
                f"one: set {PIN_ENV}='{scheme}={claims[0].distribution}', or pass "
                f"Broadcast(url, backend='{claims[0].distribution}')."
            )
        self._raise_missing(scheme)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_missing(self, scheme: str) -> None:
        for failed in self._entry_point_backbones:
            if isinstance(failed.error, IncompatiblePlugin) and scheme in failed.error.schemes:
                raise failed.error
            if failed.error is not None and (
                failed.name == scheme or failed.distribution == FIRST_PARTY.get(scheme)
            ):
                raise PluginLoadError(
                    f"The plugin for {scheme}:// ({failed.origin}) is installed but failed to "
                    f"load: {type(failed.error).__name__}: {failed.error}. Reinstall it or "
                    "check its dependencies."
                ) from failed.error
        installed = tuple(self.schemes())
        parts = [f"Unsupported backend: no broadcast backbone is installed for {scheme}://."]
        base = scheme.partition("+")[0]
        if scheme in FIRST_PARTY:
            parts.append(f"Install it: pip install {FIRST_PARTY[scheme]}.")
        elif base != scheme and (base in installed or base in FIRST_PARTY):
            parts.append(
                f"'+{scheme.partition('+')[2]}' names a SQLAlchemy driver; opal-broadcast picks "
                f"its own: write {base}:// instead."
            )
        elif scheme in NO_FIRST_PARTY_PLUGIN:
            parts.append(
                f"opal-broadcast has no plugin of its own for {NO_FIRST_PARTY_PLUGIN[scheme]}: "
                f"install a third-party plugin that serves {scheme}://, or write one "
                "(docs/plugin-authors.md)."
            )
        else:
            close = difflib.get_close_matches(scheme, {*installed, *FIRST_PARTY}, n=1)
            if close:
                parts.append(f"Did you mean {close[0]}://?")
        parts.append(f"Installed: {', '.join(installed) or 'none'}.")
        broken = [b for b in self._entry_point_backbones if b.error is not None]
        if broken:
            parts.append(
                "Plugins that failed to load: "
                + ", ".join(f"{b.origin} ({type(b.error).__name__})" for b in broken)
                + "."
            )
        raise UnknownScheme(" ".join(parts), scheme=scheme, installed=installed)

    def _autoload(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._entry_point_backbones = [
                _load_entry_point(ep) for ep in entry_points(group=ENTRY_POINT_GROUP)
            ]
            self._loaded = True
        for backbone in self._entry_point_backbones:
            if backbone.error is not None:
                logger.warning(
                    "opal-broadcast plugin %s failed to load: %s: %s",
                    backbone.origin,
                    type(backbone.error).__name__,
                    backbone.error,
                )


def _load_entry_point(ep: EntryPoint) -> Backbone:
    dist = ep.dist
    distribution = dist.metadata["Name"] if dist is not None else None
    version = dist.version if dist is not None else None
    try:
        plugin = ep.load()
    except Exception as exc:  # a broken plugin must never break the others
        return Backbone(ep.name, distribution, version, None, exc)
    return _load(plugin, name=ep.name, distribution=distribution, version=version)


def _load(plugin: object, *, name: str, distribution: str | None, version: str | None) -> Backbone:
    """Check the plugin's declaration (and its connection class) now, before any use."""
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(_hookspecs)
    try:
        manager.register(plugin, name=name)
        info = check_declaration(manager.hook.opal_broadcast_backbone())
        distribution = distribution or info.distribution
        _check_contract(info, name, distribution, version)
        connection = info.connection
        if info.contract == 0:
            for required in REQUIRED_HOOKS:
                if not getattr(manager.hook, required).get_hookimpls():
                    raise TypeError(f"the plugin implements no {required} hook")
            connection = hook_connection_class(manager.hook, name)
    except Exception as exc:
        return Backbone(name, distribution, version, None, exc)
    unknown = sorted(info.capabilities - CAPABILITIES.keys())
    if unknown:
        logger.warning(
            "opal-broadcast plugin %s declares capabilities this core does not know (ignored): "
            "%s. Known: %s.",
            name,
            ", ".join(unknown),
            ", ".join(CAPABILITIES),
        )
    deprecation = None
    if info.contract < CONTRACT_VERSION:
        deprecation = (
            f"The {_schemes(set(info.schemes))} plugin {distribution or name} implements plugin "
            f"contract {info.contract} (the nine pluggy hooks), deprecated: opal-broadcast "
            f"{SUPPORTED_UNTIL} will refuse it. Move it to contract {CONTRACT_VERSION} (a "
            f"Connection class): see {MIGRATION_GUIDE}."
        )
    capabilities = info.capabilities & CAPABILITIES.keys()
    return Backbone(name, distribution, version, info, None, connection, capabilities, deprecation)


def _check_contract(
    info: BackboneInfo, name: str, distribution: str | None, version: str | None
) -> None:
    if OLDEST_CONTRACT <= info.contract <= CONTRACT_VERSION:
        return
    from . import __version__

    who = f"{distribution} {version or ''}".strip() if distribution else name
    if info.contract > CONTRACT_VERSION:
        fix = "pip install -U opal-broadcast"
    else:
        fix = f"pip install -U {distribution}" if distribution else f"update the plugin {name}"
    raise IncompatiblePlugin(
        f"The {_schemes(set(info.schemes))} plugin {who} implements plugin contract "
        f"{info.contract}; opal-broadcast {__version__} implements contract {CONTRACT_VERSION} "
        f"(and runs contracts {OLDEST_CONTRACT} to {CONTRACT_VERSION}). Fix: {fix}.",
        schemes=info.schemes,
    )


def _plugin_name(plugin: object) -> str:
    return str(getattr(plugin, "__name__", None) or type(plugin).__name__)


def _schemes(schemes: set[str]) -> str:
    return ", ".join(f"{s}://" for s in sorted(schemes))


def _pins() -> dict[str, str]:
    text = os.environ.get(PIN_ENV, "")
    pins = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        scheme, sep, target = item.partition("=")
        if not sep or not scheme.strip() or not target.strip():
            raise ConfigurationError(
                f"{PIN_ENV}={text!r} is malformed: expected 'scheme=distribution[,...]'."
            )
        pins[scheme.strip().lower()] = target.strip()
    return pins


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry (entry points loaded on first use unless disabled)."""
    global _default
    if _default is None:
        autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "").lower() not in {"1", "true", "yes"}
        registry = Registry(autoload=autoload)
        from . import __version__, _memory

        registry.register(
            _memory, name="memory", distribution="opal-broadcast", version=__version__
        )
        _default = registry
    return _default


def register(plugin: object, *, name: str | None = None) -> Backbone:
    """Register a backbone plugin in this process (no entry point needed)."""
    return default_registry().register(plugin, name=name)


def backbones() -> list[Backbone]:
    """Every backbone plugin this process knows, loaded or failed."""
    return default_registry().backbones()
