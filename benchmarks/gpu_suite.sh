#!/usr/bin/env bash
# Every benchmark's GPU mode in one go, for a machine lent for a short while: each benchmark runs under its own time
# limit (so a slow one cannot starve the rest), its output is kept in LOG_DIR/<name>.log, and a summary of each one's
# last lines and exit code ends the run. The issue-deciding one (bench_score, umt score's >= 2x goal) runs first.
#
#   bash benchmarks/gpu_suite.sh [LOG_DIR]      # default LOG_DIR: gpu-bench-logs
#
# Without a GPU each benchmark stops at once ("--device cuda: no CUDA device is available", exit 2): a dry run of this
# script.
#
# The limits add up to 560 s; set SUITE_SCALE=2 (say) to double each one on a machine held for longer.
set -u
here=$(cd "$(dirname "$0")" && pwd)
logs=${1:-gpu-bench-logs}
folder=$(mkdir -p "$logs" && cd "$logs" && pwd) || { echo "error: cannot write the logs to $logs" >&2; exit 2; }
logs=$folder
cd "$here/.." || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
scale=${SUITE_SCALE:-1}

python3 - <<'EOF' 2>&1 | tee "$logs/env.log"
import importlib, sys
import torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), {gpu}")
for name in ("umt_cli", "transformers", "timm", "accelerate", "pydantic", "av", "decord", "scipy", "safetensors"):
    try:
        print(f"  {name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as error:  # a missing package is reported, and the benchmarks needing it fail on their own
        print(f"  {name} MISSING: {error}")
EOF

device=(--device cuda)
evaluate=(--preset umt-b16 --frames 4 --size 224)  # its default preset is the small CPU one

summary=()
run() {  # run NAME LIMIT_S ARGS...: one benchmark under `timeout`, its exit code kept for the summary
    local name=$1 limit=$(($2 * scale))
    shift 2
    echo "== $name (limit ${limit} s): python benchmarks/$name.py $*" | tee "$logs/$name.log"
    timeout --kill-after=10 "$limit" python3 "benchmarks/$name.py" "$@" 2>&1 | tee -a "$logs/$name.log"
    local code=${PIPESTATUS[0]}
    summary+=("$name: exit $code$([ "$code" = 124 ] && echo ' (time limit)')")
}

run bench_score 200 "${device[@]}" --workers 4  # the decoding (~15 ms a video on one core) would bound a GPU
run bench_finetune 120 "${device[@]}"
run bench_eval 80 "${device[@]}" "${evaluate[@]}"
run bench_distill 80 "${device[@]}"
run bench_pretrain 80 "${device[@]}"

{
    echo "== summary"
    printf '%s\n' "${summary[@]}"
    for log in "$logs"/bench_*.log; do
        echo "-- $(basename "$log" .log)"
        grep -E "speed-up|x \(goal|peak|FAILED|Error|error:" "$log" | tail -6
    done
} | tee "$logs/summary.log"
