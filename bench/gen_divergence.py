"""Where FastLM's stock-shaped greedy generation and lm-eval HFLM's (HF ``generate``) part, call by call.

Runs the same generation requests through both on one model and records every forward: the
keyword arguments (tensor shapes, dtypes, strides; other values by type), the input ids, attention
mask and position ids, and the last position's top-2 logits. Prints how many generations are
identical and, per generation chunk (a prefill and its decoding steps), how many forwards each
side made, the first whose inputs differ and the first whose greedy tokens differ, with the
largest top-1 logit difference before it; then the first differing items' texts.

    python bench/gen_divergence.py --model qwen2.5-coder-1.5b --benchmarks bbh --limit 20 \\
        --batch-size 64 --device cuda --dtype bfloat16 --out divergence.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from eval_speed import BenchSetup, add_setup_arguments

from eval_tasks.fastlm import FastLM
from eval_tasks.task_cache import TaskCache


def _describe(value):
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype), "stride": list(value.stride()),
                "contiguous": value.is_contiguous(), "device": str(value.device)}  # fmt: skip
    if isinstance(value, (int, float, bool, str)) or value is None:
        return value
    return type(value).__name__


def _record(model, work):
    calls = []

    def before(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        backends = {name: getattr(torch.backends.cuda, f"{name}_sdp_enabled")()
                    for name in ("flash", "mem_efficient", "math", "cudnn")
                    if hasattr(torch.backends.cuda, f"{name}_sdp_enabled")}  # fmt: skip
        calls.append({
            "kwargs": {key: _describe(value) for key, value in sorted(kwargs.items())},
            "args": [_describe(value) for value in args],
            "ids": None if ids is None else ids.detach().cpu(),
            "mask": None if kwargs.get("attention_mask") is None else kwargs["attention_mask"].detach().cpu(),
            "positions": None if kwargs.get("position_ids") is None else kwargs["position_ids"].detach().cpu(),
            "backends": backends,
            "autocast": torch.is_autocast_enabled(),
            "grad": torch.is_grad_enabled(),
        })

    def after(module, args, kwargs, output):
        logits = output.logits[:, -1].float()
        values, indices = logits.topk(2, dim=-1)
        calls[-1]["top2"] = (values.cpu(), indices.cpu())

    hooks = [model.register_forward_pre_hook(before, with_kwargs=True),
             model.register_forward_hook(after, with_kwargs=True)]  # fmt: skip
    try:
        outputs = work()
    finally:
        for hook in hooks:
            hook.remove()
    return outputs, calls


def _same(first, second) -> bool:
    if first is None or second is None:
        return first is None and second is None
    return first.shape == second.shape and torch.equal(first, second)


def _chunks(calls: list[dict]) -> list[list[dict]]:
    """Calls split at each prefill (a forward over more than one position, or the first)."""
    chunks: list[list[dict]] = []
    for call in calls:
        if not chunks or call["ids"].shape[1] > 1:
            chunks.append([])
        chunks[-1].append(call)
    return chunks


def _compare_chunks(stock: list[list[dict]], fast: list[list[dict]]) -> list[dict]:
    """Per chunk: its forwards on each side, whether the prefill inputs are equal, the first forward
    (0: the prefill) whose inputs differ and the first whose greedy tokens differ, within the
    forwards both sides made, and the largest |top-1 logit difference| before that."""
    figures = []
    for index, (theirs, mine) in enumerate(zip(stock, fast)):
        first_input = next((step for step, (a, b) in enumerate(zip(theirs, mine))
                            if not all(_same(a[key], b[key]) for key in ("ids", "mask", "positions"))), None)  # fmt: skip
        first_token = next((step for step, (a, b) in enumerate(zip(theirs, mine))
                            if not torch.equal(a["top2"][1][:, 0], b["top2"][1][:, 0])), None)  # fmt: skip
        upto = min(len(theirs), len(mine)) if first_token is None else first_token
        deltas = [float((a["top2"][0][:, 0] - b["top2"][0][:, 0]).abs().max()) for a, b in zip(theirs[:upto], mine[:upto])]
        rows = [] if first_token is None else (
            (theirs[first_token]["top2"][1][:, 0] != mine[first_token]["top2"][1][:, 0]).nonzero().flatten().tolist())
        figures.append({"chunk": index, "forwards": [len(theirs), len(mine)], "rows": int(theirs[0]["ids"].shape[0]),
                        "first_input_difference": first_input, "first_token_difference": first_token,
                        "rows_differing_there": rows, "max_abs_top1_delta_before": max(deltas, default=0.0)})  # fmt: skip
    return figures


def _plain(call):
    return {key: call[key] for key in ("kwargs", "args", "backends", "autocast", "grad")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser, "bbh")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-gen-tokens", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    bench = BenchSetup.load(args)
    model, tokenizer = bench.loaded.model.eval(), bench.loaded.tokenizer
    requests = bench.requests(bench.specs[0], TaskCache(), args)
    from lm_eval.models.huggingface import HFLM

    stock = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size)
    fast = FastLM(model, tokenizer, args.batch_size, stock_shapes=True)
    fast.hf_generate_drops_full_mask()  # its probe call, outside the recording
    stock_texts, stock_calls = _record(model, lambda: stock.generate_until(requests, disable_tqdm=True))
    fast_texts, fast_calls = _record(model, lambda: fast.generate_until(requests, disable_tqdm=True))
    same = sum(a == b for a, b in zip(stock_texts, fast_texts, strict=True))
    report = {"model": args.model, "items": len(requests), "generations_identical": same / len(requests),
              "calls": [len(stock_calls), len(fast_calls)], "drops_full_mask": fast._drops_full_mask,
              "attn_implementation": getattr(model.config, "_attn_implementation", None),
              "first_prefill": {"stock": _plain(stock_calls[0]), "fast": _plain(fast_calls[0])},
              "chunks": _compare_chunks(_chunks(stock_calls), _chunks(fast_calls)),
              "differing_items": [{"item": index, "stock": stock_texts[index][:300], "fast": fast_texts[index][:300]}
                                  for index in range(len(requests)) if stock_texts[index] != fast_texts[index]][:8]}  # fmt: skip
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
