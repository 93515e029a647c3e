#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv .venv and install what the book, the package and the tests need.
#
#   bash scripts/setup-env.sh        (the Makefile runs it before every target that needs Python)
#
# Idempotent and fast on a re-run: when .venv holds a stamp matching a hash of requirements.txt,
# pyproject.toml and this script, nothing is installed. Nothing is registered outside .venv (no user kernels).
# Environment: PYTHON (interpreter to create .venv with, default python3), METALEARN_VENV (default .venv).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${METALEARN_VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_PIN="torch==2.13.0+cpu"          # the CPU build: ~1.4 GB installed instead of ~5.8 GB with CUDA libraries
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
STAMP="$VENV/.metalearn-setup.sha256"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

say() { printf 'setup-env: %s\n' "$*"; }
die() { printf 'setup-env: error: %s\n' "$*" >&2; exit 1; }

needs_py310='import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'

# --- the virtualenv -------------------------------------------------------------------------------------------
if [ -x "$VENV/bin/python" ]; then
    "$VENV/bin/python" -c "$needs_py310" 2>/dev/null \
        || die "$VENV exists but its Python ($("$VENV/bin/python" -V 2>&1 || echo broken)) is older than 3.10 or broken; remove it (rm -rf $VENV) and run again"
else
    command -v "$PYTHON" >/dev/null 2>&1 \
        || die "no '$PYTHON' on PATH: install Python >= 3.10, or point PYTHON at one (PYTHON=/path/to/python3.11 make ...)"
    "$PYTHON" -c "$needs_py310" \
        || die "Python >= 3.10 is needed, but '$PYTHON' is $("$PYTHON" -V 2>&1); point PYTHON at a newer one (PYTHON=python3.11 make ...)"
    say "creating $VENV with $("$PYTHON" -V 2>&1)"
    "$PYTHON" -m venv "$VENV" \
        || die "'$PYTHON -m venv' failed; on Debian/Ubuntu install the venv module first (apt-get install python3-venv)"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip)

# --- up to date already? --------------------------------------------------------------------------------------
hash_inputs=(requirements.txt scripts/setup-env.sh)
[ -f pyproject.toml ] && hash_inputs+=(pyproject.toml)
want=$( { "$PY" -V 2>&1; cat "${hash_inputs[@]}"; } | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    say "$VENV is up to date (delete $STAMP to force a reinstall)"
    exit 0
fi
start=$SECONDS
rm -f "$STAMP"

# --- torch first, so that nothing later pulls a CUDA build -----------------------------------------------------
log="$VENV/setup-torch.log"
: > "$log"
torch_version='import importlib.metadata as m; print(m.version("torch"))'
if have=$("$PY" -c "$torch_version" 2>/dev/null); then
    say "torch: $have already in $VENV, kept"
elif "${PIP[@]}" install -q "$TORCH_PIN" >>"$log" 2>&1; then
    say "torch: installed $TORCH_PIN from pip's configured sources"
elif "${PIP[@]}" install -q --index-url "$TORCH_CPU_INDEX" --timeout 15 --retries 0 "$TORCH_PIN" >>"$log" 2>&1; then
    say "torch: installed $TORCH_PIN from PyTorch's CPU index"
elif "${PIP[@]}" install -q --index-url "$TORCH_CPU_INDEX" --timeout 15 --retries 0 "torch>=2.2" >>"$log" 2>&1; then
    say "torch: $TORCH_PIN not found; installed the newest CPU build from PyTorch's CPU index"
else
    say "torch: no CPU build reachable; falling back to plain 'torch>=2.2' from the default index (large: may include CUDA libraries)"
    "${PIP[@]}" install "torch>=2.2" || { cat "$log" >&2; die "could not install torch (pip's messages above and in $log)"; }
fi
torch_installed=$("$PY" -c "$torch_version")
say "torch $torch_installed"

# --- book and test tooling, and the package itself (editable) --------------------------------------------------
if [ -f pyproject.toml ]; then
    say "installing requirements.txt and the metalearn_core package (editable)"
    "${PIP[@]}" install -q -r requirements.txt -e .
else
    say "warning: no pyproject.toml yet, so metalearn_core is not installed; installing requirements.txt only"
    "${PIP[@]}" install -q -r requirements.txt
fi

# nothing above may have replaced the torch installed first (a CUDA build would be ~4 GB more)
[ "$("$PY" -c "$torch_version")" = "$torch_installed" ] \
    || say "warning: torch changed from $torch_installed to $("$PY" -c "$torch_version") while installing the requirements"

echo "$want" > "$STAMP"
say "done in $((SECONDS - start)) s"
