# Sourced by the scripts: makes `uv` available (on PATH, for the tests' own subprocesses too) and
# the workspace environment current. Uses the machine's Python (3.10+); never downloads one.
export UV_PYTHON_DOWNLOADS=never
if ! command -v uv >/dev/null 2>&1; then
  if ! python3 -c "import uv" >/dev/null 2>&1; then
    echo "installing uv (pip install uv) ..." >&2
    python3 -m pip install --quiet --disable-pip-version-check "uv>=0.8" >&2 ||
      # A distribution's own Python refuses system-wide installs (PEP 668): install for the user.
      python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "uv>=0.8" >&2
  fi
  # pip may put the binary somewhere not on PATH (a pyenv version before its shims are rehashed,
  # ~/.local/bin): put it there, so the tests' own subprocesses find it too.
  uv_bin=$(python3 -c "import uv; print(uv.find_uv_bin())")
  export PATH="$(dirname "$uv_bin"):$PATH"
fi
uv sync --locked --all-packages --quiet
