#!/usr/bin/env bash
# The GPU suite as one command on a lent H100/H200 (Python 3.12 and torch, no ComfyUI packages, no
# network), with .gpu-kit/ (`make gpu-kit`) carried beside the working tree:
#
#   bash benchmarks/gpu_run.sh [--budget-s 420]     # the suite, JSON lines in $OUT (or out/)
#   bash benchmarks/gpu_run.sh --smoke              # the same path on a CPU at tiny sizes (CI)
#
# 1. installs the kit's wheels into a private folder put first on PYTHONPATH (nothing system-wide),
# 2. unpacks the kit's ComfyUI source and points the suite at it (FREESWIM_COMFYUI),
# 3. runs benchmarks/gpu_suite.py, which imports everything first and stops within seconds if an
#    import fails, then runs its cases in order of value within the budget, writing each one's
#    JSON line as it is measured and saying which cases it skipped.
# Without a kit (a machine that has the packages, or --smoke) steps 1-2 are skipped and the
# hosts `make setup` built are used.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${FREESWIM_GPU_KIT:-.gpu-kit}
PY=${PYTHON:-python3}
DEST=${OUT:-out}
SCRATCH=${TMPDIR:-/tmp}/freeswim-gpu-run
smoke=0
for a in "$@"; do [ "$a" = "--smoke" ] && smoke=1; done
mkdir -p "$DEST"
started=$(date +%s)

if [ -d "$KIT/wheels" ] && [ $smoke = 0 ]; then
  if ! ls "$KIT"/wheels/*.whl >/dev/null 2>&1; then
    echo "gpu_run: $KIT/wheels holds no wheels: run \`make gpu-kit\` again" >&2
    exit 2
  fi
  rm -rf "$SCRATCH/site" && mkdir -p "$SCRATCH"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SCRATCH/site" "$KIT"/wheels/*.whl
  export PYTHONPATH="$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}"
  shopt -s nullglob
  hosts=("$KIT"/host/comfyui-*-src.tar.gz)
  shopt -u nullglob
  if [ ${#hosts[@]} -ne 1 ]; then
    echo "gpu_run: expected one ComfyUI source in $KIT/host, found ${#hosts[@]}: run \`make gpu-kit\`" >&2
    exit 2
  fi
  version=$(basename "${hosts[0]}"); version=${version#comfyui-}; version=${version%-src.tar.gz}
  rm -rf "$SCRATCH/ComfyUI-$version" && mkdir -p "$SCRATCH/ComfyUI-$version"
  tar xzf "${hosts[0]}" -C "$SCRATCH/ComfyUI-$version"
  rm -f "$SCRATCH/ComfyUI-$version/extra_model_paths.yaml"
  export FREESWIM_COMFYUI="$SCRATCH/ComfyUI-$version"
  echo "gpu_run: kit installed in $(( $(date +%s) - started )) s: $(ls "$KIT"/wheels | tr '\n' ' '); ComfyUI $version"
elif [ $smoke = 0 ]; then
  echo "gpu_run: no $KIT/wheels; using this environment's packages and the hosts \`make setup\` built" >&2
fi
[ $smoke = 1 ] || export FREESWIM_COMFY_CPU=0
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
export PYTHONUNBUFFERED=1
"$PY" benchmarks/gpu_suite.py --out "$DEST/gpu_suite.jsonl" "$@" 2>&1 | tee "$DEST/gpu_run.log"
exit "${PIPESTATUS[0]}"
