#!/usr/bin/env bash
# GPU window of session 14 (2-GPU host).
# GPU 0: 1. the Table 2 subset (8 runs at 10 examples per task, seeds 0-1, 50 items per task), four
#    workers on one GPU, deterministic training (the default since 3fdfa6f), swept twice, one after
#    the other: does a four-worker sweep now reproduce itself? (bench/compare_stores.py)
#    2. the cost of deterministic training on long fits: bench/train_throughput.py off then on.
# GPU 1: the full protocol (no eval limit) of the four trained runs at 50 examples per task, seed 0,
#    four workers on one GPU, as make reproduce-table2 runs them: per-run phase times under sharing,
#    from which bench/sweep_projection.py projects the whole Table 2.
set -uo pipefail
export PYTHONPATH=/tmp/site:/tmp/mlbench/code MLBENCH_CACHE_DIR=/tmp/mlbench/cache MLBENCH_DATA_DIR=/tmp/mlbench/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
m=/tmp/mlbench; out=$m/out; mkdir -p "$out" "$MLBENCH_CACHE_DIR/gguf"
ln -sf $m/models/SmolLM2-135M-Instruct.Q4_1.gguf "$MLBENCH_CACHE_DIR/gguf/"
cd $m/code; rev=$(cat REVISION)
stamp() { echo "$(date +%T) $*" >> "$out/driver.log"; }
python3 -m metalora.cli models fetch smollm2-135m > "$out/fetch_smol.log" 2>&1; stamp smol fetched $?
nvidia-smi -L > $out/gpus.txt 2>&1
save_runs() {  # work-dir label: the runs' small JSON files (config, cost, results), no per-sample files
  mkdir -p $out/runs_$2; (cd $1 && find . -path '*/.launch' -prune -o \( -name '*.json' -size -2M \) -print \
    | grep -v -e per_sample -e samples/ | xargs -r cp --parents -t $out/runs_$2/)
}
sw() {  # label: the limited subset on GPU 0
  CUDA_VISIBLE_DEVICES=0 python3 bench/sweep_scale.py configs/table2.yaml --gpus 1 --workers-per-gpu 4 \
    --match 'shots 10, seed [0-1],' --eval-limit 50 --work $m/scale_$1 \
    --out $out/sweep_deterministic_h200_$1_$rev.json > $out/sweep_$1.log 2>&1; stamp sweep $1 done $?
  save_runs $m/scale_$1 $1
}
gpu0() {
  sw a; sw b
  python3 bench/compare_stores.py $out/runs_a $out/runs_b > $out/compare_stores.txt 2>&1; stamp compare $?
  for setting in off on; do
    CUDA_VISIBLE_DEVICES=0 python3 bench/train_throughput.py --methods lora,hydralora,metalora:stacked \
      --steps 300 --warmup 100 --method-steps metalora:stacked=40/8 --deterministic-training $setting \
      --device cuda --dtype bfloat16 > $out/train_throughput_h200_smollm2_deterministic_${setting}_$rev.jsonl \
      2> $out/throughput_$setting.log
    stamp throughput $setting done $?
  done
}
gpu1() {
  CUDA_VISIBLE_DEVICES=1 python3 bench/sweep_scale.py configs/table2.yaml --gpus 1 --workers-per-gpu 4 \
    --match 'shots 50, seed 0,' --work $m/scale_full \
    --out $out/sweep_full_protocol_h200_$rev.json > $out/sweep_full.log 2>&1; stamp sweep full done $?
  save_runs $m/scale_full full
}
gpu0 & gpu1 & wait
stamp all done
