#!/usr/bin/env bash
# GPU window 2 of session 13: bench/train_determinism.py (four fits of one LoRA run sharing the GPU,
# --deterministic-training off and on; a smoke fit of every other method with it on).
set -uo pipefail
export PYTHONPATH=/tmp/site:/tmp/mlbench/code MLBENCH_CACHE_DIR=/tmp/mlbench/cache MLBENCH_DATA_DIR=/tmp/mlbench/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
m=/tmp/mlbench; out=$m/out; mkdir -p "$out" "$MLBENCH_CACHE_DIR/gguf"
ln -sf $m/models/SmolLM2-135M-Instruct.Q4_1.gguf "$MLBENCH_CACHE_DIR/gguf/"
cd $m/code; rev=$(cat REVISION)
stamp() { echo "$(date +%T) $*" >> "$out/driver.log"; }
python3 -m metalora.cli models fetch smollm2-135m > "$out/fetch_smol.log" 2>&1; stamp smol fetched $?
python3 bench/train_determinism.py --device cuda --dtype bfloat16 --processes 4 --steps 60 \
  --smoke-methods hydralora,dora,metalora,metalora:stacked --smoke-steps 3 \
  --out $out/train_determinism_h200_smollm2_$rev.json > $out/determinism.log 2>&1; stamp determinism done $?
stamp all done
