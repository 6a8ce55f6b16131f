#!/usr/bin/env bash
# GPU window 3 of session 15 (one H200): a warm BBH and MMLU evaluation, before (8e8e80b) and after the
# scoring's templates are compiled once, in two processes one after the other.
set -uo pipefail
export PYTHONPATH=/tmp/site MLBENCH_CACHE_DIR=/tmp/mlbench/cache MLBENCH_DATA_DIR=/tmp/mlbench/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
m=/tmp/mlbench; out=$m/out; mkdir -p "$out" "$MLBENCH_CACHE_DIR/gguf" $m/code_before
ln -sf $m/models/SmolLM2-135M-Instruct.Q4_1.gguf "$MLBENCH_CACHE_DIR/gguf/"
tar -xzf $m/code_before.tgz -C $m/code_before; cp $m/code/REVISION $m/code_before/REVISION_AFTER
rev=$(cat $m/code/REVISION)
stamp() { echo "$(date +%T) $*" >> "$out/driver.log"; }
(cd $m/code && PYTHONPATH=/tmp/site:$m/code python3 -m metalora.cli models fetch smollm2-135m > "$out/fetch_smol.log" 2>&1); stamp smol fetched $?
prof() {  # code-dir label
  (cd $1 && PYTHONPATH=/tmp/site:$1 python3 bench/eval_profile.py --model smollm2-135m --data-root $m/data --benchmarks bbh,mmlu \
    --batch-sizes 64 --device cuda --dtype bfloat16 --out $out/eval_profile_h200_smollm2_$2.json > $out/eval_profile_$2.log 2>&1)
  stamp profile $2 done $?
}
prof $m/code_before before_8e8e80b
prof $m/code after_$rev
stamp all done
