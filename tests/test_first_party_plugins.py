"""The three first-party plugins are found through their entry points, cheaply."""

import json
import subprocess
import sys

SCRIPT = """
import json, sys
import opal_broadcast
found = {
    scheme: [b.distribution, b.error is None]
    for b in opal_broadcast.backbones() if b.info for scheme in b.info.schemes
}
drivers = sorted(m for m in ("redis", "asyncpg", "aiokafka") if m in sys.modules)
print(json.dumps({"found": found, "drivers": drivers}))
"""


def test_entry_points_serve_every_first_party_scheme_without_importing_drivers():
    """Discovery maps each scheme to its distribution and imports none of the drivers."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    out = json.loads(result.stdout)
    assert out["drivers"] == []
    expected = {
        "redis": "opal-broadcast-redis",
        "rediss": "opal-broadcast-redis",
        "postgres": "opal-broadcast-postgres",
        "postgresql": "opal-broadcast-postgres",
        "kafka": "opal-broadcast-kafka",
    }
    for scheme, distribution in expected.items():
        assert out["found"].get(scheme) == [distribution, True], scheme
