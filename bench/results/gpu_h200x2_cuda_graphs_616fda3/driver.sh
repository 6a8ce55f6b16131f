#!/usr/bin/env bash
# GPU window of session 10 (detached, 2-GPU host): stock-shaped decoding steps as CUDA graphs.
# GPU 1: bench/eval_speed.py (stock HFLM, FastLM fast / stock shapes / stock shapes + CUDA graphs) on
#        SmolLM2 (BBH + heldout, 40 items per task), then Qwen2.5-Coder-1.5B (20 items per task).
# GPU 0: one full-protocol LoRA run of SmolLM2 with --eval-cuda-graphs auto, then one of Qwen.
set -uo pipefail
export PYTHONPATH=/tmp/site:/tmp/mlbench/code MLBENCH_CACHE_DIR=/tmp/mlbench/cache MLBENCH_DATA_DIR=/tmp/mlbench/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
m=/tmp/mlbench; out=$m/out; mkdir -p "$out" "$MLBENCH_CACHE_DIR/gguf"
ln -sf $m/models/SmolLM2-135M-Instruct.Q4_1.gguf "$MLBENCH_CACHE_DIR/gguf/"
cd $m/code; rev=$(cat REVISION)
stamp() { echo "$(date +%T) $*" >> "$out/driver.log"; }
nvidia-smi -L > "$out/gpus.txt"
python3 -m metalora.cli models fetch smollm2-135m > "$out/fetch_smol.log" 2>&1; stamp smol fetched $?
qwen=$m/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
wait_qwen() { while [ ! -e $qwen ]; do sleep 2; done; }
fetch_qwen() {
  ( flock 9; [ -e $m/qwen.fetched ] || { ln -sf $qwen "$MLBENCH_CACHE_DIR/gguf/"
    python3 -m metalora.cli models fetch qwen2.5-coder-1.5b > "$out/fetch_qwen.log" 2>&1; stamp qwen fetched $?
    touch $m/qwen.fetched; } ) 9>$m/qwen.lock
}
speed() {  # model label limit
  CUDA_VISIBLE_DEVICES=1 python3 bench/eval_speed.py --model $1 --data-root $m/data --benchmarks bbh,heldout \
    --limit $3 --batch-size 64 --device cuda --dtype bfloat16 --noise-batch-size 0 \
    --out "$out/eval_speed_h200_$2_bf16_graphs_$rev.json" > "$out/speed_$2.log" 2>&1; stamp speed $2 done $?
}
run() {  # label args...
  local label=$1; shift
  CUDA_VISIBLE_DEVICES=0 python3 -m metalora.cli run --method lora --shots 50 --profile full --eval-cuda-graphs auto \
    --store $m/store_$label "$@" > "$out/run_$label.log" 2>&1; stamp run $label done $?
  mkdir -p "$out/run_$label"; (cd $m/store_$label && find . -name '*.json' -size -3M -exec cp --parents {} "$out/run_$label/" \;)
}
gpu1() { speed smollm2-135m smollm2 40; wait_qwen; fetch_qwen; speed qwen2.5-coder-1.5b qwen15b 20; }
gpu0() { run smol; wait_qwen; fetch_qwen; run qwen --model qwen2.5-coder-1.5b; }
gpu1 & gpu0 & wait
stamp all done
