#!/usr/bin/env bash
# GPU window 6 driver (detached, 2-GPU host): the sweep on 1 GPU and on 2 GPUs side by side; evaluation backends end to end.
set -uo pipefail
export PYTHONPATH=/tmp/site:/tmp/mlbench/code MLBENCH_CACHE_DIR=/tmp/mlbench/cache MLBENCH_DATA_DIR=/tmp/mlbench/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
out=/tmp/mlbench/out; mkdir -p "$out" "$MLBENCH_CACHE_DIR/gguf"
ln -sf /tmp/mlbench/models/SmolLM2-135M-Instruct.Q4_1.gguf "$MLBENCH_CACHE_DIR/gguf/"
cd /tmp/mlbench/code
stages=",${1:-scale,speed},"
stamp() { echo "$(date +%T) $*" >> "$out/driver.log"; }
nvidia-smi -L > "$out/gpus.txt"
[ -e /tmp/mlbench/cache/models/gguf-b179c9523d0e6a0f ] || python3 -m metalora.cli models fetch smollm2-135m > "$out/fetch.log" 2>&1
stamp fetched $?
if [[ $stages == *,scale,* ]]; then stamp scale
  python3 bench/sweep_scale.py configs/table2.yaml --gpus 1,2 --workers-per-gpu 4 --match 'shots 10, seed [0-3],' \
    --eval-limit ${2:-50} --work /tmp/mlbench/scale --out "$out/sweep_scale_h200x2.json" > "$out/scale.log" 2>&1
  stamp scale done $?
  for s in /tmp/mlbench/scale/gpus-*; do mkdir -p "$out/launch/$(basename $s)"; cp -r $s/.launch/* "$out/launch/$(basename $s)/" 2>/dev/null; done
fi
if [[ $stages == *,speed,* ]]; then stamp speed
  CUDA_VISIBLE_DEVICES=0 python3 bench/eval_speed.py --model smollm2-135m --data-root /tmp/mlbench/data \
    --benchmarks mmlu,bbh_mc,bbh --limit ${3:-40} --batch-size 64 --device cuda --dtype bfloat16 \
    --noise-batch-size 0 --no-static --end-to-end --out "$out/eval_speed_h200_smollm2_bf16_e2e.json" \
    > "$out/speed.log" 2>&1; stamp speed done $?; fi
stamp all done
