"""Discovery through real installed distributions (dist-info on sys.path), in a fresh process.

Unlike pluggy's loader, a broken plugin is recorded and reported without breaking other schemes,
and two distributions claiming one scheme (even under the same entry-point name) are a conflict.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

PLUGIN = """
from opal_broadcast.plugin import CONTRACT_VERSION, BackboneInfo, hookimpl
from opal_broadcast._memory import MemoryConnection

SCHEME = {scheme!r}

class Connection(MemoryConnection):
    @classmethod
    async def open(cls, url, options, link):
        import {driver}  # drivers are imported at connect time, never at discovery
        return await super().open(url, options, link)

@hookimpl
def opal_broadcast_backbone():
    return BackboneInfo(
        schemes=(SCHEME,), contract=CONTRACT_VERSION + {ahead}, connection=Connection,
        summary={summary!r},
    )
"""

#: A plugin written against contract 0: the nine hooks (deprecated, run through an adapter).
HOOKS_PLUGIN = """
from opal_broadcast import BackboneInfo, hookimpl
from opal_broadcast._memory import MemoryConnection

@hookimpl
def opal_broadcast_backbone():
    return BackboneInfo(schemes=("oldstyle",), summary="hooks")

@hookimpl
async def opal_broadcast_connect(url, options, link):
    return await MemoryConnection.open(url, options, link)

@hookimpl
async def opal_broadcast_publish(connection, channel, message):
    await connection.publish(channel, message)

@hookimpl
async def opal_broadcast_subscribe(connection, channel):
    await connection.subscribe([channel])
"""


def plugin(scheme, summary, driver="json", ahead=0):
    return PLUGIN.format(scheme=scheme, summary=summary, driver=driver, ahead=ahead)


def install(site, distribution, version, module, source, entry_name):
    """Write a package and its dist-info, as pip would."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
    )
    (info / "entry_points.txt").write_text(f"[opal_broadcast]\n{entry_name} = {module}\n")


@pytest.fixture
def site(tmp_path):
    install(
        tmp_path,
        "acme-opal-nats",
        "1.2.0",
        "acme_nats",
        plugin("nats", "acme", driver="acme_fake_driver"),
        "nats",
    )
    (tmp_path / "acme_fake_driver.py").write_text("")
    install(
        tmp_path,
        "broken-opal-plugin",
        "0.1",
        "broken_plugin",
        "raise ImportError(\"No module named 'zmq'\")",
        "zmq",
    )
    for distribution, version, summary in (("dup-one", "1.0", "one"), ("dup-two", "2.0", "two")):
        install(
            tmp_path,
            distribution,
            version,
            distribution.replace("-", "_"),
            plugin("dup", summary),
            "dup",
        )
    install(
        tmp_path,
        "opal-broadcast-future",
        "9.0",
        "future_plugin",
        plugin("future", "", ahead=1),
        "future",
    )
    install(tmp_path, "old-opal-plugin", "0.5", "old_plugin", HOOKS_PLUGIN, "oldstyle")
    return tmp_path


SCRIPT = """
import json, sys, warnings, anyio
import opal_broadcast
from opal_broadcast import Broadcast, BroadcastError

async def attempt(url, **kw):
    try:
        async with Broadcast(url, **kw) as b, b.subscribe("c") as s:
            await b.publish("c", "hi")
            return {"ok": (await s.get()).message, "summary": b._hub.backbone.info.summary}
    except BroadcastError as exc:
        cause = exc.__cause__
        return {"error": type(exc).__name__, "message": str(exc),
                "cause": type(cause).__name__ if cause else None}

async def main():
    out = {"driver_before": "acme_fake_driver" in sys.modules}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for url in sys.argv[1:]:
            out[url] = await attempt(url)
    out["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
    out["pinned"] = await attempt("dup://x", backend="dup-two")
    out["driver_after"] = "acme_fake_driver" in sys.modules
    print(json.dumps(out))

anyio.run(main)
"""


def run(site, *args, env=None, script=SCRIPT):
    environment = {**os.environ, "PYTHONPATH": str(site)}
    environment.pop("OPAL_BROADCAST_PIN", None)
    environment.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_installed_plugins_are_found_and_failures_isolated(site):
    """nats works, zmq's import error is reported, dup conflicts, memory unaffected."""
    out = json.loads(run(site, "nats://a", "zmq://b", "dup://c", "memory://d", "amqp://e").stdout)
    assert out["driver_before"] is False, "discovery must not import the driver"
    assert out["driver_after"] is True
    assert out["nats://a"]["ok"] == "hi"
    assert out["memory://d"]["ok"] == "hi"
    zmq = out["zmq://b"]
    assert zmq["error"] == "PluginLoadError"
    assert "broken-opal-plugin 0.1" in zmq["message"] and "zmq" in zmq["message"]
    assert zmq["cause"] == "ImportError"
    dup = out["dup://c"]
    assert dup["error"] == "PluginConflict"
    assert "dup-one 1.0" in dup["message"] and "dup-two 2.0" in dup["message"]
    assert "OPAL_BROADCAST_PIN='dup=dup-one'" in dup["message"]
    assert out["pinned"]["summary"] == "two"
    unknown = out["amqp://e"]
    assert unknown["error"] == "UnknownScheme"
    assert "Installed: " in unknown["message"] and "nats" in unknown["message"]
    assert "broken-opal-plugin" in unknown["message"]


def test_a_plugin_on_a_newer_contract_is_refused_and_the_others_keep_working(site):
    """A contract the core does not implement: IncompatiblePlugin naming both versions and the
    fix, for that scheme only; nats:// and memory:// work in the same process."""
    out = json.loads(run(site, "future://a", "nats://b", "memory://c").stdout)
    future = out["future://a"]
    assert future["error"] == "IncompatiblePlugin"
    message = future["message"]
    assert "opal-broadcast-future 9.0" in message
    assert "contract 2" in message and "implements contract 1" in message
    assert "pip install -U opal-broadcast" in message
    assert out["nats://b"]["ok"] == "hi"
    assert out["memory://c"]["ok"] == "hi"


def test_a_plugin_on_the_hooks_contract_works_with_one_deprecation_warning(site):
    """Contract 0 (the nine hooks) runs through the adapter; one PluginContractWarning names the
    distribution and the guide's migration section."""
    out = json.loads(run(site, "oldstyle://a", "oldstyle://b").stdout)
    assert out["oldstyle://a"].get("ok") == "hi", out
    assert out["oldstyle://b"]["ok"] == "hi"
    [warning] = out["warnings"]
    assert warning.startswith("PluginContractWarning: ")
    assert "old-opal-plugin" in warning
    assert "plugin-authors.md#migrating-from-the-hooks-contract-0" in warning


def test_pin_through_the_environment(site):
    """OPAL_BROADCAST_PIN=dup=dup-one resolves the conflict without code."""
    out = json.loads(run(site, "dup://c", env={"OPAL_BROADCAST_PIN": "dup=dup-one"}).stdout)
    assert out["dup://c"]["summary"] == "one"


def test_autoload_switch_disables_entry_points(site):
    """With autoloading off, installed plugins are ignored; memory and register() still work."""
    script = """
import anyio, types
import opal_broadcast
from opal_broadcast import Broadcast, UnknownScheme, _memory
async def main():
    try:
        async with Broadcast("nats://a"):
            raise SystemExit("nats:// should be unknown")
    except UnknownScheme:
        pass
    import acme_nats
    opal_broadcast.register(acme_nats)
    async with Broadcast("nats://a") as b, Broadcast("memory://m") as m:
        await b.publish("c", "x"); await m.publish("c", "y")
    print("ok")
anyio.run(main)
"""
    result = run(site, env={"OPAL_BROADCAST_DISABLE_PLUGIN_AUTOLOAD": "1"}, script=script)
    assert result.stdout.strip() == "ok"


def test_cli_backends_lists_every_distribution(site):
    """`opal-broadcast backends` shows scheme, distribution, version and the load error."""
    result = run(
        site,
        script="import sys; from opal_broadcast._cli import main; sys.exit(main(['backends']))",
    )
    lines = result.stdout.splitlines()
    assert any(
        line.split()[:6] == ["nats", "acme-opal-nats", "1.2.0", "1", "-", "ok"] for line in lines
    )
    old = [line for line in lines if line.startswith("oldstyle ")]
    assert old and old[0].split()[3] == "0" and "deprecated contract" in old[0]
    future = [line for line in lines if "opal-broadcast-future" in line]
    assert future and "failed: IncompatiblePlugin" in future[0]
    assert any(line.split()[:3] == ["dup", "dup-one", "1.0"] for line in lines)
    assert any(line.split()[:3] == ["dup", "dup-two", "2.0"] for line in lines)
    broken = [line for line in lines if "broken-opal-plugin" in line]
    assert broken and "failed: ImportError" in broken[0]
