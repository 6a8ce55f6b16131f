#!/usr/bin/env bash
# GPU window 2 of session 14 (2-GPU host): now that training is deterministic, do sweeps under MPS
# reproduce the time-sliced ones? The Table 2 subset (8 runs at 10 examples per task, seeds 0-1, 50
# items per task) under --mps: four workers on GPU 0, eight on GPU 1, at the same time; each store is
# compared (on the CPU machine) with window 1's time-sliced sweeps a and b.
set -uo pipefail
export PYTHONPATH=/tmp/site:/tmp/mlbench/code MLBENCH_CACHE_DIR=/tmp/mlbench/cache MLBENCH_DATA_DIR=/tmp/mlbench/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
m=/tmp/mlbench; out=$m/out; mkdir -p "$out" "$MLBENCH_CACHE_DIR/gguf"
ln -sf $m/models/SmolLM2-135M-Instruct.Q4_1.gguf "$MLBENCH_CACHE_DIR/gguf/"
cd $m/code; rev=$(cat REVISION)
stamp() { echo "$(date +%T) $*" >> "$out/driver.log"; }
python3 -m metalora.cli models fetch smollm2-135m > "$out/fetch_smol.log" 2>&1; stamp smol fetched $?
nvidia-smi -L > $out/gpus.txt 2>&1
save_runs() {  # work-dir label: the runs' small files (config, cost, results, DONE), no per-sample files
  mkdir -p $out/runs_$2; (cd $1 && find . -path '*/.launch' -prune -o \( \( -name '*.json' -o -name DONE \) -size -2M \) -print \
    | grep -v -e per_sample -e samples/ | xargs -r cp --parents -t $out/runs_$2/)
}
sw() {  # gpu workers label
  CUDA_VISIBLE_DEVICES=$1 python3 bench/sweep_scale.py configs/table2.yaml --gpus 1 --workers-per-gpu $2 --mps \
    --match 'shots 10, seed [0-1],' --eval-limit 50 --work $m/scale_$3 \
    --out $out/sweep_mps_h200_$3_$rev.json > $out/sweep_$3.log 2>&1; stamp sweep $3 done $?
  save_runs $m/scale_$3 $3
}
sw 0 4 mps4 & sw 1 8 mps8 & wait
stamp all done
