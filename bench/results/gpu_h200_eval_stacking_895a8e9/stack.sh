#!/usr/bin/env bash
# Session 14, window 3 (one H200): bench/eval_stacking.py on SmolLM2-135M bf16.
set -uo pipefail
export PYTHONPATH=/tmp/site:/tmp/mlbench/code MLBENCH_CACHE_DIR=/tmp/mlbench/cache MLBENCH_DATA_DIR=/tmp/mlbench/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
m=/tmp/mlbench; mkdir -p "$MLBENCH_CACHE_DIR/gguf"
ln -sf $m/models/SmolLM2-135M-Instruct.Q4_1.gguf "$MLBENCH_CACHE_DIR/gguf/"
cd $m/code; rev=$(cat REVISION)
python3 -m metalora.cli models fetch smollm2-135m > $OUT/fetch_smol.log 2>&1
python3 bench/eval_stacking.py --benchmarks bbh --limit 10 --rows 64 --ks 1,2,4,8 --steps 32 \
  --device cuda --dtype bfloat16 --out $OUT/eval_stacking_h200_smollm2_bf16_$rev.json > $OUT/eval_stacking.log 2>&1
echo rc=$?; grep '^{' $OUT/eval_stacking.log | grep -v setup | cut -c1-220
