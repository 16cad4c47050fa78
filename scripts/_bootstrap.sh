# Sourced by the scripts: makes `uv` available and the workspace environment current.
# Uses the machine's Python (3.10+); never downloads an interpreter.
export UV_PYTHON_DOWNLOADS=never
if ! command -v uv >/dev/null 2>&1; then
  if ! python3 -m uv --version >/dev/null 2>&1; then
    echo "installing uv (pip install uv) ..." >&2
    python3 -m pip install --quiet --disable-pip-version-check "uv>=0.8" >&2
  fi
  uv() { python3 -m uv "$@"; }
fi
uv sync --locked --all-packages --quiet
