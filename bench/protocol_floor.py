"""The least time a sweep's runs can take on this GPU when every forward is the model's own: a floor.

Why: issue #9 asks for a whole Table 2 (91 full-protocol runs of SmolLM2-135M) in 30 minutes on
one H200, with every answer lm-eval's. Before building more speed it is worth knowing what the GPU
can do at all. This script counts the tokens the protocol must push through the model and divides
them by the fastest rate the model's forward reaches on this GPU, so the result is a time no
implementation of the same protocol on the same forward can beat; how far a measured sweep is from
it says how much speed is left to find.

What it counts, per run (the requests a run builds, through the task cache, tokenized by lm-eval's
rules through the project's ``FastLM``; nothing is run):

- log-likelihood requests: each distinct forward input (context plus continuation without its last
  token, left-truncated to the model's length, as HFLM feeds it); requests with the same input, as
  MMLU's four one-token answers of a question, need that input once (HFLM runs it once too);
- generation requests: each prompt (left-truncated to the model's length less the new tokens, as
  HFLM truncates) and, with ``--generations RUN_FOLDER``, each answer's tokens from that run's
  ``samples/<benchmark>.jsonl.gz``, or with ``--generated FILE`` a JSON's
  ``benchmarks.<name>.generated_tokens`` (``bench/results/gpu_h200_session15_1f6acb9/generated.json``:
  every answer of SmolLM2's whole BBH and GSM8K generation), the answers as lm-eval keeps them, cut at
  their stop strings, so at most what was decoded; each new token counts as one token of a long
  forward (a decoding step costs at least that); without either no new tokens are counted, so the
  floor is lower still;
- training, with ``--measured STORE`` and a CONFIG: each planned run's example passes (its budget
  plan) times the median tokens per pass of the store's finished runs (``cost.json``), twice (a
  backward pass costs at least its forward); without them training is left out.

What it measures (``--measure``, a GPU): the decoder alone (no output layer: a run's evaluation
computes at least its scored positions' logits on top), on random tokens at lengths 64 to 2,048,
each in batches of ``--tokens-per-call`` tokens, without padding and without a mask, so that
attention takes its fastest (flash) kernel, where HFLM's padded batches take the masked one. The
rate counted for a sequence of n tokens is the best rate measured at any length up to n (attention
grows with length, so a longer sequence is not faster per token). The output layer over every
position, as HFLM computes it, is measured too and printed for comparison; it is not in the floor.
With ``--counts FILE`` the counts come from a file this script wrote (``--out``), so that they can
be made on a CPU and the rates on the GPU.

Prints the counts, the rates, the floor per benchmark and run, and with CONFIG the floor of all
its runs on one GPU and divided by ``--gpus``; with ``--measured`` also each benchmark's median
measured seconds and their ratio to the floor, the measured seconds divided by ``--workers`` (the
workers that shared the GPU while those runs ran: each had about that share of it).

    MLBENCH_DATA_DIR=../shared/data python bench/protocol_floor.py --out counts.json     # counts only, CPU
    python bench/protocol_floor.py --counts counts.json --measure --device cuda --dtype bfloat16 \\
        --config configs/table2.yaml --profile full \\
        --measured bench/results/gpu_h200x2_session14_deeaeb5/runs_full --workers 4 --out floor.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench modules, run as a script

from eval_speed import BenchSetup, _revision, _sync, add_setup_arguments

from eval_tasks.task_cache import TaskCache
from metalora.provenance import package_versions

LENGTHS = (64, 128, 256, 512, 1024, 2048)


def count_benchmark(lm, requests) -> dict:
    """Tokens the requests of one benchmark need: lengths of distinct log-likelihood inputs and of
    generation prompts (with their new-token caps)."""
    inputs: dict[int, int] = {}  # hash of a distinct input -> its length
    prompts, caps = [], []
    for request in requests:
        if request.request_type == "loglikelihood":
            context, continuation = request.args
            if context:
                context_tokens, continuation_tokens = lm._encode_pair(context, continuation)
            else:  # lm-eval scores an empty context from the end-of-text token
                context_tokens, continuation_tokens = [lm.prefix_token_id], lm.tok_encode(continuation)
            fed = tuple((context_tokens + continuation_tokens)[-(lm.max_length + 1):][:-1])  # HFLM's input
            inputs[hash(fed)] = len(fed)  # a collision could only drop an input: the floor stays a floor
        elif request.request_type == "generate_until":
            context, settings = request.args
            cap = int(settings.get("max_gen_toks", lm.max_gen_toks))
            prompts.append(min(len(lm.tok_encode(context)), lm.max_length - cap))
            caps.append(cap)
        else:
            print(f"request type {request.request_type} is not counted by this script (loglikelihood and "
                  "generate_until are)", file=sys.stderr)
            sys.exit(2)
    return {"loglikelihood_requests": sum(r.request_type == "loglikelihood" for r in requests),
            "distinct_inputs": sorted(inputs.values()), "prompts": prompts, "new_token_caps": caps}


def count_generations(run_folder: Path, benchmark: str, tokenizer) -> list[int] | None:
    """The tokens of each answer a run generated on ``benchmark`` (its samples file), or None."""
    path = run_folder / "samples" / f"{benchmark}.jsonl.gz"
    if not path.exists():
        return None
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        outputs = [json.loads(line).get("output") for line in handle if line.strip()]
    texts = [text for text in outputs if isinstance(text, str)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def measure_rate(work, tokens: int, device: str, repeats: int) -> float:
    """Tokens per second of ``work`` (best of ``repeats`` timed calls after two untimed ones)."""
    for _ in range(2):
        work()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return tokens / best


def measure_rates(model, device: str, tokens_per_call: list[int], repeats: int, head_tokens: int) -> dict:
    """Decoder-only tokens/s per length (best over the batch sizes), and with the output layer."""
    decoder = model.get_decoder()
    vocabulary = model.config.vocab_size
    generator = torch.Generator(device="cpu").manual_seed(0)
    rates: dict[str, dict] = {}
    with torch.inference_mode():
        for length in LENGTHS:
            entry = {"decoder_by_tokens_per_call": {}}
            for tokens in tokens_per_call:
                rows = max(1, tokens // length)
                ids = torch.randint(0, vocabulary, (rows, length), generator=generator).to(device)
                rate = measure_rate(lambda ids=ids: decoder(input_ids=ids, use_cache=False), rows * length, device, repeats)
                entry["decoder_by_tokens_per_call"][rows * length] = rate
                del ids
            entry["decoder"] = max(entry["decoder_by_tokens_per_call"].values())
            rows = max(1, head_tokens // length)
            ids = torch.randint(0, vocabulary, (rows, length), generator=generator).to(device)
            entry["with_output_layer"] = measure_rate(
                lambda ids=ids: torch.log_softmax(model(input_ids=ids, use_cache=False).logits, dim=-1),
                rows * length, device, repeats)
            del ids
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            rates[str(length)] = entry
            print(f"  length {length:>5}: decoder {entry['decoder'] / 1e6:6.2f} M tokens/s "
                  f"(by tokens per call: {', '.join(f'{t}: {r / 1e6:.2f}M' for t, r in entry['decoder_by_tokens_per_call'].items())}); "
                  f"with the output layer and log-softmax {entry['with_output_layer'] / 1e6:6.2f} M tokens/s", flush=True)
    return rates


def best_rate_up_to(rates: dict, length: int) -> float:
    """The best decoder rate measured at any length up to ``length`` (the shortest for shorter ones)."""
    measured = sorted((int(key), entry["decoder"]) for key, entry in rates.items())
    usable = [rate for key, rate in measured if key <= length] or [measured[0][1]]
    return max(usable)


def floor_seconds(lengths, rates: dict) -> float:
    """Seconds to push sequences of these lengths through the decoder at the best rates."""
    return sum(length / best_rate_up_to(rates, length) for length in lengths)


def measured_costs(store: Path) -> list[dict]:
    """The cost.json of each run in ``store`` (run folders at depth 1 or 2), each read once."""
    from metalora.runs.store import read_json_or_none

    found = (read_json_or_none(path) for path in sorted(store.glob("*/cost.json")) + sorted(store.glob("*/*/cost.json")))
    return [cost for cost in found if isinstance(cost, dict)]


def tokens_per_pass(costs: list[dict]) -> float | None:
    """Median training tokens per example pass of the measured runs."""
    ratios = []
    for cost in costs:
        training = cost.get("training") or {}
        if training.get("example_passes") and training.get("tokens"):
            ratios.append(training["tokens"] / training["example_passes"])
    return statistics.median(ratios) if ratios else None


def measured_eval_seconds(costs: list[dict]) -> dict[str, float]:
    """Median measured seconds per benchmark of the measured runs (``time.eval_s``)."""
    seen: dict[str, list[float]] = {}
    for cost in costs:
        for name, value in ((cost.get("time") or {}).get("eval_s") or {}).items():
            seen.setdefault(name, []).append(float(value))
    return {name: statistics.median(values) for name, values in seen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setup_arguments(parser, "heldout,bbh,bbh_mc,mmlu")
    parser.add_argument("--counts", type=Path, default=None, help="counts written by an earlier --out")
    parser.add_argument("--generations", type=Path, default=None, help="a run folder whose samples give answer lengths")
    parser.add_argument("--generated", type=Path, default=None, help="a JSON of benchmarks.<name>.generated_tokens (module docstring)")
    parser.add_argument("--measure", action="store_true", help="measure the forward's rates (a GPU)")
    parser.add_argument("--tokens-per-call", default="32768,131072")
    parser.add_argument("--head-tokens", type=int, default=16384, help="tokens per call with the output layer")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", default=None, help="a sweep config: the floor of all its runs")
    parser.add_argument("--profile", default=None)
    parser.add_argument("--measured", type=Path, default=None, help="store of measured runs (cost.json at depth 1-2)")
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="workers that shared the GPU in the --measured runs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.max_gen_tokens = None  # each benchmark's own cap, as a run evaluates it (BenchSetup.requests reads it)

    setup = BenchSetup.load(args)
    model, tokenizer, device = setup.loaded.model, setup.loaded.tokenizer, setup.loaded.device
    if args.counts:
        counts = json.loads(args.counts.read_text())["counts"]
    else:
        from eval_tasks.fastlm import FastLM

        lm = FastLM(model, tokenizer, 64)
        cache = TaskCache()
        counts = {}
        for spec in setup.specs:
            started = time.perf_counter()
            counts[spec.name] = count_benchmark(lm, setup.requests(spec, cache, args))
            if args.generations and spec.generative:
                counts[spec.name]["new_tokens"] = count_generations(args.generations, spec.name, tokenizer)
            found = counts[spec.name]
            print(f"{spec.name}: {found['loglikelihood_requests']:,} log-likelihood requests, "
                  f"{len(found['distinct_inputs']):,} distinct inputs, {sum(found['distinct_inputs']):,} tokens; "
                  f"{len(found['prompts']):,} prompts, {sum(found['prompts']):,} tokens, new tokens at most "
                  f"{sum(found['new_token_caps']):,}"
                  + (f", generated {sum(found['new_tokens']):,}" if found.get("new_tokens") is not None else "")
                  + f" ({time.perf_counter() - started:.0f} s)", flush=True)

    if args.generated:
        generated = json.loads(args.generated.read_text())["benchmarks"]
        for name, found in counts.items():
            if name in generated:
                found["new_tokens"] = [generated[name]["generated_tokens"]]
    report: dict = {"code_revision": _revision(), "model": args.model, "device": device, "dtype": setup.loaded.dtype,
                    "versions": package_versions(("torch", "transformers", "lm_eval")),
                    "counts": counts}
    if args.measure:
        if device.startswith("cuda"):
            report["gpu"] = torch.cuda.get_device_name()
        print(f"rates on {report.get('gpu', device)}:")
        report["rates"] = measure_rates(model, device, [int(t) for t in args.tokens_per_call.split(",")],
                                        args.repeats, args.head_tokens)
        floors = {}
        for name, found in counts.items():
            generated = found.get("new_tokens") or []
            floors[name] = {
                "loglikelihood_s": floor_seconds(found["distinct_inputs"], report["rates"]),
                "prompts_s": floor_seconds(found["prompts"], report["rates"]),
                "new_tokens_s": sum(generated) / best_rate_up_to(report["rates"], max(LENGTHS)) if generated else 0.0,
                "new_tokens_counted": found.get("new_tokens") is not None or not found["prompts"],
            }
            floors[name]["total_s"] = floors[name]["loglikelihood_s"] + floors[name]["prompts_s"] + floors[name]["new_tokens_s"]
        evaluation = sum(entry["total_s"] for entry in floors.values())
        report["floor_per_run"] = {"benchmarks": floors, "evaluation_s": evaluation}
        costs = measured_costs(args.measured) if args.measured else []
        measured = measured_eval_seconds(costs)
        print("floor of one run's evaluation (decoder only, best rates):")
        for name, entry in floors.items():
            seen = measured.get(name)
            share = seen / args.workers if seen else None
            print(f"  {name:>8}: {entry['total_s']:7.2f} s"
                  + ("" if entry["new_tokens_counted"] else " (new tokens not counted)")
                  + (f" | measured {seen:.1f} s (median, {args.workers} workers sharing the GPU: {share:.1f} s of it), "
                     f"x{share / entry['total_s']:.1f} the floor" if seen else ""))
        print(f"  all: {evaluation:.2f} s")
        if args.config:
            from sweep_projection import plan

            runs = plan(args.config, args.profile, None)
            per_pass = tokens_per_pass(costs)
            training_rate = best_rate_up_to(report["rates"], max(1, round(per_pass))) if per_pass else None
            training = sum(2 * run.passes * per_pass / training_rate for run in runs) if per_pass else 0.0
            total = len(runs) * evaluation + training
            report["floor_config"] = {"config": args.config, "runs": len(runs), "evaluation_s": len(runs) * evaluation,
                                      "training_s": training, "training_tokens_per_pass": per_pass,
                                      "total_s": total, "gpus": args.gpus, "per_gpu_s": total / args.gpus}
            print(f"{args.config}: {len(runs)} runs; floor {len(runs) * evaluation / 60:.1f} min of evaluation + "
                  + (f"{training / 60:.1f} min of training ({per_pass:.1f} tokens per pass)" if per_pass else
                     "training not counted (no --measured store)")
                  + f" = {total / 60:.1f} min on one GPU" + (f", {total / args.gpus / 60:.1f} min on {args.gpus}" if args.gpus > 1 else ""))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
