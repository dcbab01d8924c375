#!/usr/bin/env bash
# The GPU measurements of issue 8 as one device call (docs/performance.md, "Running it on a lent GPU"):
# installs the carried wheels (tmp/whl, from tools/device_wheels.py), then runs tools/benchmark.py's plan within a
# time budget, so that the call ends inside its limit with every finished (model, mode) in $OUT/PART.jsonl.
#
#   bash tools/gpu_check.sh PART COMMIT [BUDGET_SECONDS]
#
# PART, most important first, one part a device call: a: the default path against raw diffusers, and the
# compiled path with CUDA graphs, on SD1.5 (SDXL's compile would not fit); b: the memory modes, and SDXL compiled;
# c: start-to-first-image times, token merging, channels-last, plain torch.compile, the extras table (LoRAs,
# switching, start-up).
# COMMIT: `git rev-parse --short HEAD` here (the device's copy has no .git). BUDGET_SECONDS: 480 by default, for a
# 600 s call (the rest: installing, writing the logs).
set -u
part=${1:?PART (a, b or c)} commit=${2:?COMMIT} budget=${3:-480}
out=${OUT:-/tmp/gpu-check-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    tmp/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
case $part in
    a) args=(--plan sd15:default,sdxl:default,sd15:compiled-cudagraphs --no-start-times --no-extras) ;;
    b) args=(--plan sdxl:lowvram,sdxl:medvram,sd15:lowvram,sdxl:compiled-cudagraphs --no-start-times --no-extras) ;;
    c) args=(--plan sd15:default,sdxl:default,sd15:tome,sdxl:tome,sdxl:channelslast,sd15:compiled,sd15:medvram) ;;
    *) echo "PART is a, b or c" >&2; exit 2 ;;
esac
python3 tools/benchmark.py --full --work-dir /tmp/sd-bench --commit "$commit" --time-budget "$budget" \
    --results "$out/$part.jsonl" "${args[@]}"
status=$?
(cd /tmp/sd-bench && tar czf "$out/logs-$part.tgz" -- *.log 2>/dev/null)
exit $status
