#!/usr/bin/env bash
# Prepares .gpu-kit/ (ignored by git) for one run of the GPU suite on a lent GPU machine that has
# Python 3.12 and torch but not ComfyUI's other packages, and no network:
#   .gpu-kit/wheels/    the wheels listed in benchmarks/gpu_kit.txt, for CPython 3.12 on x86-64
#   .gpu-kit/host/      a ComfyUI source tree as comfyui-<version>-src.tar.gz: the newest in
#                       ../shared/hosts, else the registry host that `make setup` built, packed
# The GPU machine then runs `bash benchmarks/gpu_run.sh` with .gpu-kit carried beside the
# working tree (README, "GPU measurements"). Idempotent; needs network access to PyPI here.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.gpu-kit
PYVER=${GPU_KIT_PYTHON_VERSION:-3.12}
PYTHON=${PYTHON:-python3}
LIMIT_MB=${GPU_KIT_LIMIT_MB:-56}     # leaves room for the working tree within a 64 MiB transfer

log() { printf '[gpu-kit] %s\n' "$*"; }

rm -rf "$KIT/wheels" "$KIT/host" && mkdir -p "$KIT/wheels" "$KIT/host"
binary=$(grep -v '^#' benchmarks/gpu_kit.txt | awk 'NF && $2 != "pure" {print $1}')
pure=$(grep -v '^#' benchmarks/gpu_kit.txt | awk 'NF && $2 == "pure" {print $1}')
common=(-q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp -d "$KIT/wheels")
log "downloading wheels for CPython $PYVER, x86-64: $(echo $binary $pure | tr '\n' ' ')"
# shellcheck disable=SC2086
"$PYTHON" -m pip download "${common[@]}" --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 $binary
# shellcheck disable=SC2086
"$PYTHON" -m pip download "${common[@]}" --platform any $pure

shopt -s nullglob
tarballs=("${FREESWIM_HOSTS_DIR:-../shared/hosts}"/comfyui-*-src.tar.gz)
shopt -u nullglob
if [ ${#tarballs[@]} -gt 0 ]; then
  newest=$(printf '%s\n' "${tarballs[@]}" | sort -V | tail -1)
  log "host: $(basename "$newest")"
  cp "$newest" "$KIT/host/"
elif [ -f .host/ComfyUI/main.py ]; then
  version=$("$PYTHON" -c "import re,sys; print(re.search(r'__version__\s*=\s*[\"\x27]([^\"\x27]+)', open('.host/ComfyUI/comfyui_version.py').read()).group(1))")
  log "host: the registry host, ComfyUI $version, packed"
  tar czf "$KIT/host/comfyui-$version-src.tar.gz" -C .host/ComfyUI --exclude=__pycache__ \
      --exclude=./custom_nodes/comfyui-freeswim --exclude=./models --exclude=./output --exclude=./input .
else
  echo "gpu-kit: no ComfyUI source: run \`make setup\` first" >&2
  exit 2
fi
size_kb=$(du -sk "$KIT" | cut -f1)
ls -l "$KIT/wheels" "$KIT/host" | sed 's/^/  /'
if [ "$size_kb" -gt $((LIMIT_MB * 1024)) ]; then
  echo "gpu-kit: $KIT is $((size_kb / 1024)) MB, over the $LIMIT_MB MB that may travel with the working tree" >&2
  exit 3
fi
log "ready: $KIT, $((size_kb / 1024)) MB; on the GPU machine: bash benchmarks/gpu_run.sh (carry $KIT)"
