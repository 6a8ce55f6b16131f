"""Could several runs be evaluated in one batch without changing an answer? A probe, before building it.

Evaluation is most of a Table 2's time (README, Scale-out: "What a whole Table 2 costs now"), and
most of that is generation in lm-eval's 64-row chunks, each decoding step a few hundred kernels too
small to fill a GPU. Multi-LoRA serving systems run the rows of many adapters in one batch: the
base model once over all rows, each row's own adapter update through batched matmuls
(``metalora.training.stacked_lora``, which MeTA-LoRA's stacked inner loop already uses). For a
benchmark, that is only worth building if a run's answers stay what they are when evaluated alone,
bit for bit. Two things could break that, and this script measures both on one real chunk:

1. Batch invariance of the base model: is each row's output the same when the chunk is evaluated
   alone (64 rows) and repeated K times (K x 64 rows)? cuBLAS may pick other kernels for another
   number of rows, and attention kernels may split work by batch.
2. The adapter path: K random LoRA adapters stacked (block k of the rows through adapter k,
   ``stacked_adapters``) against each adapter alone through the same path, against peft's own
   unmerged forward, and against the merged weights a run evaluates with today (a merged LoRA
   rounds W + s B A to bfloat16 once; stacking cannot merge, so if merged and unmerged differ,
   every run's evaluation would have to switch to unmerged first).

For each: how many rows' last-position logits are bit-identical, the largest |difference|, how many
greedy generations of ``--steps`` tokens are identical, and the time of K chunks one after another
against one stacked pass. The chunk is the ``--rows`` longest prompts of the benchmark's requests,
left-padded as HFLM pads a generation chunk. Prints one JSON line per comparison and a summary.

    python bench/eval_stacking.py --benchmarks bbh --limit 2 --rows 8 --ks 1,2 --steps 4 --device cpu  # smoke

GPU machine::

    PYTHONPATH=/tmp/site:$PWD python3 bench/eval_stacking.py --model /tmp/mlbench/models/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --data-root /tmp/mlbench/data --benchmarks bbh --limit 10 --rows 64 --ks 1,2,4,8 --steps 32 \\
        --device cuda --dtype bfloat16 --out $OUT/eval_stacking.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench module, run as a script

from eval_speed import BenchSetup, _revision, _timed, add_setup_arguments

from eval_tasks.task_cache import TaskCache
from metalora.provenance import package_versions
from metalora.training.stacked_lora import stacked_adapters

TARGETS = ("gate_proj", "up_proj", "down_proj")  # the project's default LoRA modules (TrainConfig)


def chunk(tokenizer, requests, rows: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``rows`` longest contexts, left-padded: HFLM sorts generation requests longest first and
    pads each chunk on the left to its longest context."""
    contexts = sorted({request.args[0] for request in requests}, key=lambda text: -len(tokenizer(text).input_ids))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(contexts[:rows], return_tensors="pt", padding=True)
    return encoded.input_ids.to(device), encoded.attention_mask.to(device)


@torch.no_grad()
def last_logits(model, ids, mask) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, -1].float()


@torch.no_grad()
def greedy(model, ids, mask, steps: int) -> torch.Tensor:
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, min_new_tokens=steps,
                         do_sample=False, pad_token_id=model.config.pad_token_id or 0)
    return out[:, ids.shape[1]:]


def compare(name: str, alone: list[torch.Tensor], stacked: torch.Tensor) -> dict:
    """Block k of ``stacked`` against ``alone[k]``: rows bit-identical, largest |difference|."""
    blocks = stacked.chunk(len(alone))
    same = sum(int(torch.equal(a[row], b[row])) for a, b in zip(alone, blocks) for row in range(a.shape[0]))
    rows = sum(a.shape[0] for a in alone)
    delta = max(float((a.float() - b.float()).abs().max()) for a, b in zip(alone, blocks))
    return {"compare": name, "rows": rows, "rows_identical": same, "max_abs_diff": delta}


def timed(device: str, work, *args) -> tuple[object, float]:
    value, seconds, _ = _timed(device, lambda: work(*args))
    return value, seconds


def random_adapters(peft_model, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """``count`` LoRA adapters with small random A and B (a trained adapter's B is not zero), stacked
    on a new first dimension per weight, in the adapter weights' own dtype and device."""
    stacked = {}
    for name, param in peft_model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            scale = 0.02 if ".lora_B." in name else 1.0 / param.shape[1] ** 0.5
            values = torch.randn((count, *param.shape), generator=generator) * scale
            stacked[name] = values.to(device=param.device, dtype=param.dtype)
    return stacked


def load_into_peft(peft_model, stacked: dict[str, torch.Tensor], index: int) -> None:
    params = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, values in stacked.items():
            params[name].copy_(values[index])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser, "bbh")
    parser.add_argument("--rows", type=int, default=64, help="rows of the chunk (HFLM's batch)")
    parser.add_argument("--ks", default="1,2,4,8", help="how many copies of the chunk to stack")
    parser.add_argument("--steps", type=int, default=32, help="greedy tokens to generate")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--max-gen-tokens", type=int, default=None, help="only shapes the requests; --steps decodes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]

    setup = BenchSetup.load(args)
    model, tokenizer, device = setup.loaded.model, setup.loaded.tokenizer, setup.loaded.device
    model.eval()
    requests = [r for spec in setup.specs for r in setup.requests(spec, TaskCache(), args)]
    ids, mask = chunk(tokenizer, requests, args.rows, device)
    header = {"setup": {"model": args.model, "device": device, "dtype": setup.loaded.dtype,
                        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                        "rows": ids.shape[0], "width": ids.shape[1], "ks": ks, "steps": args.steps,
                        "benchmarks": setup.benchmarks, "code_revision": _revision(),
                        "versions": package_versions(("torch", "transformers", "peft"))}}
    print(json.dumps(header), flush=True)
    figures = []

    def record(entry: dict) -> None:
        figures.append(entry)
        print(json.dumps(entry), flush=True)

    # 1. The base model, the chunk alone and repeated K times.
    greedy(model, ids, mask, 2)  # warm-up: kernels, allocator
    alone_logits = last_logits(model, ids, mask)
    alone_tokens, alone_s = timed(device, greedy, model, ids, mask, args.steps)
    for k in ks:
        many_ids, many_mask = ids.repeat(k, 1), mask.repeat(k, 1)
        record({"part": "base", "k": k, **compare("logits", [alone_logits] * k, last_logits(model, many_ids, many_mask))})
        tokens, stacked_s = timed(device, greedy, model, many_ids, many_mask, args.steps)
        record({"part": "base", "k": k, **compare("greedy tokens", [alone_tokens] * k, tokens),
                "seconds_k_alone": round(alone_s * k, 4), "seconds_stacked": round(stacked_s, 4)})

    # 2. K random adapters: stacked against each alone (same bmm path), peft unmerged, peft merged.
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                                  target_modules=list(TARGETS), bias="none", task_type="CAUSAL_LM"))
    peft_model.eval()
    generator = torch.Generator().manual_seed(0)
    top = max(ks)
    adapters = random_adapters(peft_model, top, generator)
    alone = []
    for index in range(top):
        one = {name: values[index:index + 1] for name, values in adapters.items()}
        with stacked_adapters(peft_model, one, 1):
            alone.append((last_logits(peft_model, ids, mask), *timed(device, greedy, peft_model, ids, mask, args.steps)))
    for k in ks:
        some = {name: values[:k] for name, values in adapters.items()}
        many_ids, many_mask = ids.repeat(k, 1), mask.repeat(k, 1)
        with stacked_adapters(peft_model, some, k):
            logits = last_logits(peft_model, many_ids, many_mask)
            tokens, stacked_s = timed(device, greedy, peft_model, many_ids, many_mask, args.steps)
        record({"part": "adapters stacked", "k": k, **compare("logits", [a[0] for a in alone[:k]], logits)})
        record({"part": "adapters stacked", "k": k, **compare("greedy tokens", [a[1] for a in alone[:k]], tokens),
                "seconds_k_alone": round(sum(a[2] for a in alone[:k]), 4), "seconds_stacked": round(stacked_s, 4)})
    peft_unmerged, peft_merged = [], []
    for index in range(min(top, 4)):
        load_into_peft(peft_model, adapters, index)
        peft_unmerged.append((last_logits(peft_model, ids, mask), greedy(peft_model, ids, mask, args.steps)))
        peft_model.merge_adapter()
        peft_merged.append((last_logits(peft_model, ids, mask), greedy(peft_model, ids, mask, args.steps)))
        peft_model.unmerge_adapter()
    count = len(peft_unmerged)
    stacked_path = torch.cat([a[0] for a in alone[:count]])
    stacked_tokens = torch.cat([a[1] for a in alone[:count]])
    record({"part": "bmm path vs peft unmerged", **compare("logits", [u[0] for u in peft_unmerged], stacked_path)})
    record({"part": "bmm path vs peft unmerged", **compare("greedy tokens", [u[1] for u in peft_unmerged],
                                                           stacked_tokens)})
    record({"part": "peft merged vs unmerged", **compare("logits", [m[0] for m in peft_merged],
                                                         torch.cat([u[0] for u in peft_unmerged]))})
    record({"part": "peft merged vs unmerged", **compare("greedy tokens", [m[1] for m in peft_merged],
                                                         torch.cat([u[1] for u in peft_unmerged]))})
    summary = {"summary": True, **header, "figures": figures}
    print(json.dumps({"summary": True, "identical": {f"{f['part']}, k={f.get('k', '-')}, {f['compare']}":
                                                     f"{f['rows_identical']}/{f['rows']}" for f in figures}}), flush=True)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
