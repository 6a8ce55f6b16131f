#!/usr/bin/env bash
# GPU window 9 driver (detached; GPU 0): SmolLM2 bf16 stock HFLM vs FastLM stock shapes vs stock-scored (logits at
# scored positions), end to end; then 4 vs 8 sweep workers sharing GPU 0 (16 runs, full training, 50 items per task).
set -uo pipefail
export PYTHONPATH=/tmp/site:/tmp/mlbench/code MLBENCH_CACHE_DIR=/tmp/mlbench/cache MLBENCH_DATA_DIR=/tmp/mlbench/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
out=/tmp/mlbench/out; mkdir -p "$out" "$MLBENCH_CACHE_DIR/gguf"
ln -sf /tmp/mlbench/models/SmolLM2-135M-Instruct.Q4_1.gguf "$MLBENCH_CACHE_DIR/gguf/"
cd /tmp/mlbench/code
rev=$(cat REVISION)
stamp() { echo "$(date +%T) $*" >> "$out/driver.log"; }
nvidia-smi -L > "$out/gpus.txt"
python3 -m metalora.cli models fetch smollm2-135m > "$out/fetch.log" 2>&1; stamp fetched $?
CUDA_VISIBLE_DEVICES=0 python3 bench/eval_speed.py --model smollm2-135m --data-root /tmp/mlbench/data --benchmarks mmlu,bbh_mc,bbh \
  --limit ${1:-40} --batch-size 64 --device cuda --dtype bfloat16 --noise-batch-size 0 --end-to-end \
  --out "$out/eval_speed_h200_smollm2_bf16_scored_$rev.json" > "$out/agree.log" 2>&1
stamp agree done $?
CUDA_VISIBLE_DEVICES=0 python3 bench/sweep_scale.py configs/table2.yaml --gpus 1 --workers-per-gpu 4,8 \
  --match 'shots 10, seed [0-3],' --eval-limit ${2:-50} --work /tmp/mlbench/scale \
  --out "$out/sweep_scale_h200_workers_4_8_$rev.json" -- --eval-shapes stock-scored > "$out/scale.log" 2>&1
stamp scale done $?
for s in /tmp/mlbench/scale/gpus-*; do mkdir -p "$out/launch/$(basename $s)"; cp -r $s/.launch/* "$out/launch/$(basename $s)/" 2>/dev/null; done
stamp all done
