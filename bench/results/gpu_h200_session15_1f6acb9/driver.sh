#!/usr/bin/env bash
# GPU window of session 15 (one H200): chunks decoding together (--eval-decode-slots) against one at a
# time on full BBH and GSM8K, then the protocol's floor (bench/protocol_floor.py).
set -uo pipefail
export PYTHONPATH=/tmp/site:/tmp/mlbench/code MLBENCH_CACHE_DIR=/tmp/mlbench/cache MLBENCH_DATA_DIR=/tmp/mlbench/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
m=/tmp/mlbench; out=$m/out; mkdir -p "$out" "$MLBENCH_CACHE_DIR/gguf"
ln -sf $m/models/SmolLM2-135M-Instruct.Q4_1.gguf "$MLBENCH_CACHE_DIR/gguf/"
cd $m/code; rev=$(cat REVISION)
stamp() { echo "$(date +%T) $*" >> "$out/driver.log"; }
python3 -m metalora.cli models fetch smollm2-135m > "$out/fetch_smol.log" 2>&1; stamp smol fetched $?
nvidia-smi -L > $out/gpus.txt 2>&1
ds() {  # benchmarks slots label
  python3 bench/decode_slots.py --model smollm2-135m --data-root $m/data --benchmarks $1 --slots $2 \
    --device cuda --dtype bfloat16 --out $out/decode_slots_h200_smollm2_$3_$rev.json > $out/decode_slots_$3.log 2>&1
  stamp decode_slots $3 done $?
}
ds bbh 1,4,8 bbh
ds heldout 1,4 heldout
python3 - "$out" "$rev" <<'PY'
import json, sys
out, rev = sys.argv[1:]
merged = {"benchmarks": {}}
for name in ("bbh", "heldout"):
    try:
        merged["benchmarks"] |= json.load(open(f"{out}/decode_slots_h200_smollm2_{name}_{rev}.json"))["benchmarks"]
    except OSError:
        pass
json.dump(merged, open(f"{out}/generated.json", "w"))
PY
python3 bench/protocol_floor.py --model smollm2-135m --data-root $m/data --counts $m/counts_smollm2.json --measure \
  --device cuda --dtype bfloat16 --generated $out/generated.json --config configs/table2.yaml --profile full \
  --measured bench/results/gpu_h200x2_session14_deeaeb5/runs_full \
  --out $out/protocol_floor_h200_smollm2_$rev.json > $out/protocol_floor.log 2>&1
stamp floor done $?
stamp all done
