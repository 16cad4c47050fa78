"""``opal-broadcast new-plugin NAME`` writes a package that installs beside the core's wheel, is
discovered through its entry point, and runs the conformance kit, which reports every method
still to write as a failure (not as an error of collection or setup). Needs ``uv``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from opal_broadcast import ConfigurationError
from opal_broadcast._cli import main
from opal_broadcast._scaffold import write_plugin
from tests._fresh_venv import clean_env, core_wheel, fresh_venv, pytest_counts, run


def test_a_bad_name_or_an_existing_folder_is_refused(tmp_path: Path) -> None:
    for name in ("Nats", "1mq", "my_mq", "mq-", "a--b", ""):
        with pytest.raises(ConfigurationError, match="cannot name a plugin"):
            write_plugin(name, tmp_path)
    write_plugin("mq", tmp_path)
    with pytest.raises(ConfigurationError, match="exists already"):
        write_plugin("mq", tmp_path)
    assert main(["new-plugin", "mq", "--directory", str(tmp_path)]) == 2


def test_the_generated_plugin_installs_is_found_and_fails_where_work_is_left(
    tmp_path: Path,
) -> None:
    assert main(["new-plugin", "acme-mq", "--directory", str(tmp_path)]) == 0
    plugin = tmp_path / "opal-broadcast-acme-mq"
    env = clean_env()
    wheel = core_wheel(tmp_path, env)
    packages = [f"{wheel}[testing]", f"{plugin}[test]", "--find-links", str(wheel.parent)]
    python = fresh_venv(tmp_path, packages, env)

    listed = run(
        [str(python), "-m", "opal_broadcast", "backends"], cwd=tmp_path, env=env, timeout=60
    )
    row = next(line.split() for line in listed.splitlines() if line.startswith("acme-mq "))
    assert row[1:5] == ["opal-broadcast-acme-mq", "0.1.0", "1", "-"]
    assert row[5] == "ok"

    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=plugin,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    counts = pytest_counts(output)
    assert result.returncode == 1, output  # tests failed; 2 or 4 would be collection/usage errors
    assert counts.get("failed", 0) > 0, output
    assert counts.get("error", 0) == 0, output
    assert "NotImplementedError" in output and "plugin-authors.md" in output, output
