"""Evaluation speed: lm-eval's stock HFLM against mlbench's FastLM, side by side in one process.

Both run the very same requests (built once from the project's lm-eval tasks) at the same batch
size on the same model. Per benchmark it prints the items (documents) per second of each, their
ratio, the largest |difference| of a request's log-likelihood, how often is_greedy and each item's
predicted option agree, and how often greedy generations are identical. The same agreement figures
are given for stock HFLM against itself at another batch size (``--noise-batch-size``, default
half): the noise floor, what a batch-shape change alone does in bfloat16. "fast" is FastLM with
free shapes (``--eval-shapes fast``: shared prefixes, float32 scoring, a refilled generation
batch); every benchmark also runs FastLM with stock shapes (``stock_shapes``, a run's default),
whose forwards are HFLM's, and its answers are compared with HFLM's; log-likelihood benchmarks
also run stock shapes with the output layer at the scored positions only (``fast_stock_scored``,
``--eval-shapes stock-scored``), with its peak memory. Log-likelihood benchmarks also get the
tokenization alone timed (requests -> lm-eval's token pairs, stock against fast, and whether the pairs are identical): on a GPU that is
most of MMLU's time, and ``--tokenization-only`` measures just that, without the model, on a CPU.
With ``--end-to-end`` it also times the whole ``eval_tasks.harness.evaluate`` call (task building
included) for the stock backend, then the fast backend with stock shapes with an empty task
cache and again with the cache filled, then ``--eval-shapes stock-scored`` and free shapes (cache
filled). A summary line gives the items/s ratio (fast / stock) per benchmark. A JSON of all
figures (with the load average) goes to ``--out``.

    python bench/eval_speed.py --benchmarks mmlu,bbh_mc --limit 1 --device cpu --dtype float32   # CPU
    python bench/eval_speed.py --benchmarks mmlu,bbh_mc --limit 40 --tokenization-only             # CPU

GPU machine (``../shared/tools/gpu-bundle``'s two calls first, with ``mmlu/`` and ``bbh/`` of the
data copied into the ignored ``.gpu-data/`` and carried in call 1), one command::

    PYTHONPATH=/tmp/site:$PWD python3 bench/eval_speed.py \\
        --model /tmp/mlbench/models/SmolLM2-135M-Instruct.Q4_1.gguf --data-root .gpu-data \\
        --benchmarks mmlu,bbh_mc,bbh --limit 40 --batch-size 64 --device cuda --dtype bfloat16 \\
        --noise-batch-size 0 --no-stock-shapes --out $OUT/eval_speed.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from eval_overhead import TABLE2_TASKS  # the sibling bench module (this folder is on sys.path)

from eval_tasks.fastlm import FastLM
from eval_tasks.harness import choose_subtasks, evaluate, hash_data_files, resolve_benchmarks
from eval_tasks.registry import training_task_subtasks
from eval_tasks.task_cache import TaskCache, TaskKey
from metalora.data.root import resolve_data_root
from metalora.models import load_model
from metalora.provenance import code_revision, package_versions


@dataclass(frozen=True)
class BenchSetup:
    """What every evaluation bench starts from: the data root, the benchmarks' specs and chosen
    tasks, the data files' hashes and the loaded model (``--data-root --benchmarks --model
    --dtype --device``)."""

    root: object
    benchmarks: list[str]
    specs: list
    chosen: dict
    data_files: dict
    loaded: object
    load_s: float

    @classmethod
    def load(cls, args) -> BenchSetup:
        root = resolve_data_root(args.data_root)
        benchmarks = [name.strip() for name in args.benchmarks.split(",") if name.strip()]
        specs = resolve_benchmarks(benchmarks)
        # heldout evaluates a run's training tasks: here those of the published Table 2 runs.
        chosen = choose_subtasks(specs, training_task_subtasks(benchmarks, TABLE2_TASKS))
        data_files = hash_data_files(specs, chosen, root)
        started = time.perf_counter()
        loaded = load_model(args.model, dtype=args.dtype, device=args.device)
        return cls(root, benchmarks, specs, chosen, data_files, loaded, time.perf_counter() - started)

    def requests(self, spec, cache: TaskCache, args) -> list:
        """The benchmark's lm-eval requests (``--limit`` items per task, ``--max-gen-tokens``), built
        through ``cache`` as a run builds them."""
        gen_tokens = (args.max_gen_tokens or spec.max_gen_tokens) if spec.generative else None
        gen_kwargs = {"max_gen_toks": gen_tokens} if gen_tokens else None
        names = [spec.task_name(subtask) for subtask in self.chosen[spec.name]]
        key = TaskKey.make(spec.name, names, self.root, self.data_files, args.limit, gen_kwargs)
        tasks = cache.tasks(key, self.root, gen_kwargs)
        return [request for task in tasks["tasks"].values() for request in task.instances]


def add_setup_arguments(parser, benchmarks: str) -> None:
    """The flags ``BenchSetup.load`` reads (model, data, benchmarks, items, device, dtype), shared by
    the evaluation benches; ``benchmarks`` is the script's default list."""
    parser.add_argument("--model", default="smollm2-135m", help="alias, hub id, HF folder or .gguf file")
    parser.add_argument("--data-root", default=None, help="shared/data layout (default: MLBENCH_DATA_DIR)")
    parser.add_argument("--benchmarks", default=benchmarks)
    parser.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(device: str, work):
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    started = time.perf_counter()
    value = work()
    _sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return value, seconds, peak


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _items(requests) -> int:
    return len({(request.task_name, request.doc_id) for request in requests})


def _predictions(requests, answers) -> dict:
    """Index of the highest-scoring option per item (multiple choice)."""
    best = defaultdict(lambda: (float("-inf"), -1))
    for request, (value, _) in zip(requests, answers, strict=True):
        key = (request.task_name, request.doc_id)
        if value > best[key][0]:
            best[key] = (value, request.idx)
    return {key: index for key, (_, index) in best.items()}


def agreement(method: str, requests, first, second) -> dict:
    """How far two sets of answers to the same requests are apart."""
    if method == "loglikelihood":
        deltas = [abs(a[0] - b[0]) for a, b in zip(first, second, strict=True)]
        greedy = sum(a[1] == b[1] for a, b in zip(first, second, strict=True))
        first_pred, second_pred = _predictions(requests, first), _predictions(requests, second)
        return {
            "max_abs_delta_loglik": max(deltas),
            "mean_abs_delta_loglik": sum(deltas) / len(deltas),
            "is_greedy_agreement": greedy / len(requests),
            "prediction_agreement": sum(first_pred[k] == second_pred[k] for k in first_pred) / len(first_pred),
        }
    same = sum(a == b for a, b in zip(first, second, strict=True))
    return {"generation_agreement": same / len(requests)}


def _describe(figures: dict) -> str:
    if "generation_agreement" in figures:
        return f"generations identical {100 * figures['generation_agreement']:.1f}%"
    return (f"max |dLL| {figures['max_abs_delta_loglik']:.2e}, is_greedy agree "
            f"{100 * figures['is_greedy_agreement']:.1f}%, prediction agree {100 * figures['prediction_agreement']:.1f}%")


def compare_encoding(requests, stock, make_fast) -> dict:
    """Tokenization alone (requests -> lm-eval's context/continuation token pairs), which on a GPU
    is most of a multiple-choice benchmark's time: stock ``_encode_pair`` per request against
    FastLM's (batched, the shared context once, options from the context's last line). The pairs
    must be identical; the figures say whether they are."""
    pairs = [request.args for request in requests if request.args[0]]
    stock_pairs, stock_s, _ = _timed("cpu", lambda: [stock._encode_pair(c, k) for c, k in pairs])
    fast = make_fast()

    def fast_encode():
        fast.prefill_pairs(pairs)
        return [fast._encode_pair(c, k) for c, k in pairs]

    fast_pairs, fast_s, _ = _timed("cpu", fast_encode)
    same = sum(a == b for a, b in zip(stock_pairs, fast_pairs, strict=True))
    return {"pairs": len(pairs), "stock_seconds": stock_s, "fast_seconds": fast_s,
            "speedup": stock_s / fast_s, "pairs_identical": same / len(pairs)}  # fmt: skip


# FastLM variants whose forwards are HFLM's (``--eval-shapes stock``), each timed and compared with stock.
STOCK_SHAPED_LABELS = {
    "fast_stock_shapes": "fast with stock shapes",
    "fast_stock_scored": "stock shapes, logits at scored positions",
    "fast_stock_graphs": "stock shapes, decoding steps as CUDA graphs",
}
# Variants that differ from plain stock shapes in one kind of request only.
STOCK_SHAPED_KINDS = {"fast_stock_scored": "loglikelihood", "fast_stock_graphs": "generate_until"}


def compare_requests(name: str, requests, stock, make_fast, device: str, repeat: int = 1,
                     other_batch=None, stock_shaped: dict | None = None) -> dict:
    """Stock and fast alternately ``repeat`` times (median seconds: a shared machine is noisy);
    each fast run starts with an empty tokenization memo, as the first run of a worker does.

    ``other_batch`` (stock HFLM at another batch size) measures the noise floor: how often the
    stock path disagrees with itself when only the batch shapes change. ``stock_shaped`` maps a
    label of ``STOCK_SHAPED_LABELS`` to a factory of FastLMs whose forwards are HFLM's (each with an
    empty memo, as fast's): their speed, peak memory and what is left of the differences when the
    shapes are HFLM's. ``fast_stock_scored`` (the output layer at the scored positions only) runs on
    log-likelihood benchmarks only."""
    kind = requests[0].request_type
    method = "loglikelihood" if kind == "loglikelihood" else "generate_until"
    kwargs = {"disable_tqdm": True}
    for lm in (stock, make_fast()):  # warm-up (CUDA kernels, allocator) on a few requests, not timed
        getattr(lm, method)(requests[:2], **kwargs)
    stock_runs, fast_runs = [], []
    for _ in range(repeat):
        stock_runs.append(_timed(device, lambda: getattr(stock, method)(requests, **kwargs)))
        fast = make_fast()
        fast_runs.append(_timed(device, lambda fast=fast: getattr(fast, method)(requests, **kwargs)))
    stock_answers, stock_s, stock_peak = (
        stock_runs[-1][0],
        _median([r[1] for r in stock_runs]),
        stock_runs[-1][2],
    )
    fast_answers, fast_s, fast_peak = fast_runs[-1][0], _median([r[1] for r in fast_runs]), fast_runs[-1][2]
    items = _items(requests)
    figures = {
        "kind": method,
        "items": items,
        "requests": len(requests),
        "stock": {"seconds": stock_s, "items_per_s": items / stock_s, "peak_bytes": stock_peak},
        "fast": {"seconds": fast_s, "items_per_s": items / fast_s, "peak_bytes": fast_peak},
        "speedup": stock_s / fast_s,
    }
    figures |= agreement(method, requests, stock_answers, fast_answers)
    print(
        f"{name:>10} {method:>14}: {items:6d} items {len(requests):6d} requests | stock "
        f"{figures['stock']['items_per_s']:9.2f} items/s | fast {figures['fast']['items_per_s']:9.2f} items/s | "
        f"x{figures['speedup']:.2f} | fast vs stock: {_describe(figures)}",
        flush=True,
    )
    if method == "loglikelihood":
        figures["tokenization"] = encoding = compare_encoding(requests, stock, make_fast)
        print(f"{'':>10} tokenization alone: stock {encoding['stock_seconds']:.2f} s "
              f"({100 * encoding['stock_seconds'] / stock_s:.0f}% of its time), fast {encoding['fast_seconds']:.2f} s "
              f"({100 * encoding['fast_seconds'] / fast_s:.0f}%), x{encoding['speedup']:.1f}; token pairs identical "
              f"{100 * encoding['pairs_identical']:.1f}%", flush=True)  # fmt: skip
    if other_batch is not None:
        answers, seconds, peak = _timed(device, lambda: getattr(other_batch, method)(requests, **kwargs))
        floor = agreement(method, requests, stock_answers, answers)
        figures["noise_floor"] = {
            "batch_size": other_batch.batch_size,
            "seconds": seconds,
            "items_per_s": items / seconds,
            "stock_vs_stock": floor,
            "fast_vs_stock": agreement(method, requests, fast_answers, answers),
        }
        print(f"{'':>10} noise floor, stock batch {stock.batch_size} vs stock batch {other_batch.batch_size}: "
              f"{_describe(floor)} (fast vs the latter: {_describe(figures['noise_floor']['fast_vs_stock'])})",
              flush=True)
    shaped_answers = {}
    for label, make in (stock_shaped or {}).items():
        if STOCK_SHAPED_KINDS.get(label, method) != method:
            continue
        getattr(make(), method)(requests[:2], **kwargs)  # warm-up, as the others had
        shaped = make()
        answers, seconds, peak = _timed(device, lambda shaped=shaped: getattr(shaped, method)(requests, **kwargs))
        shaped_answers[label] = answers
        figures[label] = {"seconds": seconds, "items_per_s": items / seconds, "peak_bytes": peak,
                          "speedup": stock_s / seconds}  # fmt: skip
        figures[label] |= agreement(method, requests, stock_answers, answers)
        if label == "fast_stock_graphs":
            figures[label]["decode_steps"] = shaped.decode_steps
            if "fast_stock_shapes" in shaped_answers:  # the same path without graphs: every text must be equal
                figures[label]["vs_eager_stock_shapes"] = agreement(
                    method, requests, shaped_answers["fast_stock_shapes"], answers)  # fmt: skip
        if method == "loglikelihood":
            figures[label]["answers_identical"] = sum(
                a == b for a, b in zip(stock_answers, answers, strict=True)) / len(requests)  # fmt: skip
        memory = f" | peak {peak / 2**30:.1f} GiB (stock {stock_peak / 2**30:.1f})" if peak else ""
        print(f"{'':>10} {STOCK_SHAPED_LABELS[label]}: {items / seconds:9.2f} items/s | x{stock_s / seconds:.2f}"
              f"{memory} | vs stock: {_describe(figures[label])}", flush=True)
        if "vs_eager_stock_shapes" in figures[label]:
            print(f"{'':>10} {'':>10} ({figures[label]['decode_steps']}) vs stock shapes without graphs: "
                  f"{_describe(figures[label]['vs_eager_stock_shapes'])}, x{figures['fast_stock_shapes']['seconds'] / seconds:.2f} "
                  f"their speed", flush=True)  # fmt: skip
    return figures


def end_to_end(model, tokenizer, benchmarks, root, args, device: str) -> dict:
    """Whole ``evaluate`` calls: stock backend, fast with an empty cache, fast with the cache filled."""
    cache = TaskCache()
    common = {"data_root": root, "limit": args.limit, "batch_size": args.batch_size}
    common["max_gen_tokens"] = args.max_gen_tokens
    figures = {}
    # stock shapes decode with CUDA graphs where they apply (the default); "_eager" without them
    for label, backend, shapes, task_cache, graphs in (
        ("stock", "hflm", "stock", None, False),
        ("stock_shapes_cold", "fast", "stock", cache, True),
        ("stock_shapes_warm", "fast", "stock", cache, True),
        ("stock_shapes_warm_eager", "fast", "stock", cache, False),
        ("stock_scored_warm", "fast", "stock-scored", cache, True),
        ("fast_warm", "fast", "fast", cache, True),
    ):
        result, seconds, peak = _timed(
            device,
            lambda backend=backend, shapes=shapes, task_cache=task_cache, graphs=graphs: evaluate(
                model, tokenizer, benchmarks, eval_backend=backend, eval_shapes=shapes, task_cache=task_cache,
                cuda_graphs=graphs, **common,
            ),
        )
        items = sum(score.n_evaluated for score in result.tasks)
        figures[label] = {"seconds": seconds, "items": items, "items_per_s": items / seconds, "peak_bytes": peak,
                          "per_benchmark": result.settings["timing"]}  # fmt: skip
        print(
            f"end to end {label:>9}: {items} items in {seconds:8.2f} s = {items / seconds:9.2f} items/s",
            flush=True,
        )
    for label in ("stock_shapes_cold", "stock_shapes_warm", "stock_shapes_warm_eager", "stock_scored_warm", "fast_warm"):
        figures[f"speedup_{label}"] = figures["stock"]["seconds"] / figures[label]["seconds"]
    print(f"end to end speed-up, stock shapes: x{figures['speedup_stock_shapes_cold']:.2f} cold cache, "
          f"x{figures['speedup_stock_shapes_warm']:.2f} warm (x{figures['speedup_stock_shapes_warm_eager']:.2f} without "
          f"CUDA graphs), x{figures['speedup_stock_scored_warm']:.2f} warm with "
          f"scored logits; free shapes, warm: x{figures['speedup_fast_warm']:.2f}")
    return figures


def _revision() -> str:
    """The code's commit, as a run records it (a git archive on a machine without git included)."""
    revision, dirty = code_revision()
    return f"{revision} (with uncommitted changes)" if dirty else revision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser, "mmlu,bbh_mc,bbh")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-gen-tokens", type=int, default=None, help="default: each benchmark's own")
    parser.add_argument("--repeat", type=int, default=1, help="alternate stock/fast runs; median time")
    parser.add_argument("--noise-batch-size", type=int, default=None,
                        help="also run stock HFLM at this batch size (default: half of --batch-size; 0: skip) "
                             "to measure how often a batch-shape change alone changes answers")
    parser.add_argument("--no-stock-shapes", action="store_true",
                        help="skip FastLM with stock shapes (HFLM's forwards)")
    parser.add_argument("--end-to-end", action="store_true", help="also time whole evaluate() calls")
    parser.add_argument("--tokenization-only", action="store_true",
                        help="only time requests -> token pairs (stock vs fast) for log-likelihood benchmarks: "
                             "the part of a GPU run that a CPU can measure without the model's arithmetic")
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # lm-eval's per-task notices

    bench = BenchSetup.load(args)
    root, specs, loaded, load_s = bench.root, bench.specs, bench.loaded, bench.load_s
    benchmarks = bench.benchmarks
    model, tokenizer, device = loaded.model.eval(), loaded.tokenizer, loaded.device
    print(
        f"model {args.model} on {device} ({loaded.dtype}), loaded in {load_s:.1f} s; batch size {args.batch_size}"
    )

    from lm_eval.models.huggingface import HFLM

    stock = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size)

    def make_fast() -> FastLM:
        return FastLM(model, tokenizer, args.batch_size)

    split = make_fast()._splits_at_lines
    print(f"fast tokenization: options from the context's last line: {'yes' if split else 'no (this tokenizer)'}")
    noise_batch = args.batch_size // 2 if args.noise_batch_size is None else args.noise_batch_size
    other_batch = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=noise_batch) if noise_batch >= 1 else None
    stock_shaped = {} if args.no_stock_shapes else {
        "fast_stock_shapes": lambda: FastLM(model, tokenizer, args.batch_size, stock_shapes=True),
        "fast_stock_scored": lambda: FastLM(model, tokenizer, args.batch_size, stock_shapes=True, scored_logits=True),
        "fast_stock_graphs": lambda: FastLM(model, tokenizer, args.batch_size, stock_shapes=True, cuda_graphs=True),
    }

    cache = TaskCache()
    results = {}
    for spec in specs:
        requests, build_s, _ = _timed("cpu", lambda spec=spec: bench.requests(spec, cache, args))
        print(
            f"{spec.name:>10}: built {len(requests)} requests in {build_s:.1f} s ({len(requests) / build_s:.0f}/s)"
        )
        if args.tokenization_only:
            if requests[0].request_type == "loglikelihood":
                encoding = compare_encoding(requests, stock, make_fast)
                results[spec.name] = {"items": _items(requests), "requests": len(requests), "build_s": build_s,
                                      "tokenization": encoding}  # fmt: skip
                print(f"{spec.name:>10} tokenization: {encoding['pairs']} pairs | stock {encoding['stock_seconds']:.2f} s"
                      f" | fast {encoding['fast_seconds']:.2f} s | x{encoding['speedup']:.1f} | pairs identical "
                      f"{100 * encoding['pairs_identical']:.1f}%", flush=True)  # fmt: skip
            continue
        kinds = {}  # heldout holds both kinds of request (its generative tasks and its multiple-choice ones)
        for request in requests:
            kinds.setdefault(request.request_type, []).append(request)
        for kind, group in kinds.items():
            name = spec.name if len(kinds) == 1 else f"{spec.name}:{kind}"
            results[name] = compare_requests(name, group, stock, make_fast, device, args.repeat, other_batch,
                                             stock_shaped) | {"build_s": build_s}  # fmt: skip

    report = {
        "model": args.model,
        "model_source": loaded.source.to_dict(),
        "device": device,
        "device_name": torch.cuda.get_device_name()
        if device.startswith("cuda")
        else platform.processor() or "cpu",
        "dtype": loaded.dtype,
        "batch_size": args.batch_size,
        "limit": args.limit,
        "repeat": args.repeat,
        "noise_batch_size": noise_batch or None,
        "max_gen_tokens": args.max_gen_tokens,
        "tokenization_only": args.tokenization_only,
        "pair_split": split,
        "load_average": os.getloadavg(),
        "load_s": load_s,
        "benchmarks": results,
        "code_revision": _revision(),
        "versions": package_versions(("lm_eval", "transformers", "torch", "tokenizers")),
    }
    if args.tokenization_only:
        _write(report, args.out)
        return
    totals = {
        label: sum(figures[label]["seconds"] for figures in results.values()) for label in ("stock", "fast")
    }
    items = sum(figures["items"] for figures in results.values())
    report["total"] = {"items": items, "stock_items_per_s": items / totals["stock"],
                       "fast_items_per_s": items / totals["fast"], "speedup": totals["stock"] / totals["fast"]}  # fmt: skip
    print(f"{'all':>10}: {items} items | stock {items / totals['stock']:.2f} items/s | fast "
          f"{items / totals['fast']:.2f} items/s | x{report['total']['speedup']:.2f}")  # fmt: skip
    print("items/s, fast / stock:", ", ".join(f"{name} x{figures['speedup']:.2f}" for name, figures in results.items()),
          f"| all x{report['total']['speedup']:.2f}")  # fmt: skip
    if args.end_to_end:
        report["end_to_end"] = end_to_end(model, tokenizer, benchmarks, root, args, device)
    _write(report, args.out)


def _write(report: dict, out: Path | None) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"figures written to {out}")


if __name__ == "__main__":
    main()
