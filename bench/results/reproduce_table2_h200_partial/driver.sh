#!/usr/bin/env bash
# GPU window 3 driver (detached): packed stacked training, one unshared full run, then the full
# Table 2 sweep until a deadline. Figures under /tmp/mlbench/out. $1 = comma list of stages, $2 = sweep deadline s.
set -uo pipefail
export PYTHONPATH=/tmp/site:/tmp/mlbench/code MLBENCH_CACHE_DIR=/tmp/mlbench/cache MLBENCH_DATA_DIR=/tmp/mlbench/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
out=/tmp/mlbench/out; mkdir -p "$out" "$MLBENCH_CACHE_DIR/gguf"
ln -sf /tmp/mlbench/models/SmolLM2-135M-Instruct.Q4_1.gguf "$MLBENCH_CACHE_DIR/gguf/"
cd /tmp/mlbench/code
stages=",${1:-train,run,sweep},"
stamp() { echo "$(date +%T) $*" >> "$out/driver.log"; }
[ -e /tmp/mlbench/cache/models/gguf-b179c9523d0e6a0f ] || python3 -m metalora.cli models fetch smollm2-135m > "$out/fetch.log" 2>&1
stamp fetched $?
if [[ $stages == *,train,* ]]; then stamp train
  python3 bench/train_throughput.py --model smollm2-135m --methods lora,metalora,metalora:stacked \
    --steps 12 > "$out/train_smollm2_packed.jsonl" 2> "$out/train.err"; stamp train done $?; fi
if [[ $stages == *,run,* ]]; then stamp run
  python3 bench/run_walltime.py --methods lora --extra=--profile --extra=full --extra=--shots --extra=50 \
    --out "$out/run_walltime_gpu_full.json" > "$out/run.log" 2>&1; stamp run done $?; fi
if [[ $stages == *,sweep,* ]]; then stamp sweep
  mkdir -p /tmp/mlbench/rt2
  python3 bench/make_walltime.py reproduce-table2 --workdir /tmp/mlbench/rt2 --deadline "${2:-600}" \
    --var "MLBENCH=python3 -m metalora.cli" \
    --var "SWEEP_FLAGS=--store /tmp/mlbench/rt2/runs --gpus 1 --workers-per-gpu ${3:-8}" \
    --out "$out/reproduce_table2_gpu.json" > "$out/sweep.log" 2>&1; stamp sweep done $?
  cp /tmp/mlbench/rt2/make.log "$out/sweep_make.log"; fi
stamp all done
