"""Training throughput of every method, side by side in one process, with MeTA-LoRA / LoRA ratios.

One JSON line per method, then one summary line (``"summary": true``) with the ratios the issue's
targets are stated in (MeTA-LoRA examples/s >= 0.9x LoRA's, peak memory <= 1.5x), for every
MeTA-LoRA mode listed and, under ``"best_metalora"``, for the fastest of them (by examples/s),
named. ``metalora:stacked`` / ``metalora:batched`` are MeTA-LoRA with that ``inner_loop``; a
``+ckpt`` suffix (``metalora:stacked+ckpt``, ``lora+ckpt``) turns on activation checkpointing for
that method only, so a checkpointed mode is measured against plain LoRA in the same run.

- ``examples_per_s``: distinct training examples an optimizer step consumes, per second (LoRA and
  HydraLoRA: the batch; MeTA-LoRA: tasks x (support + query) per meta-iteration).
- ``example_passes_per_s``: forward+backward passes over examples per second (MeTA-LoRA counts
  each of its k inner steps on the support set again).
- ``tokens_per_s``: non-padding tokens through forward passes per second (the trainers' own count
  in their step log, from the encoded examples: MeTA-LoRA counts each inner step's support set).
- ``peak_memory_gib``: the device's peak allocated memory during that method's training.

Each method runs ``--steps`` optimizer steps and is then stopped (the trainer is configured for far
more, so no budget rule refuses a short run; the adapter is discarded). Steps after the first
``--warmup`` are timed (kernel selection and the allocator warm up first).
A method that runs out of device memory is reported as ``"error": "out of memory"``; the others
still run. Every method trains its own fresh adapter on the same base model.

``--shape`` trains a random-init Llama of that shape instead of loaded weights, created directly
on the device in the run's dtype (no CPU initialisation: a 7B model would take minutes there). Its
vocabulary may be smaller than the tokenizer's; token ids are then taken modulo the vocabulary,
which keeps every example's true length. ``--seq-len N`` lengthens every prompt (repeating it) and
cuts it from the left so that every example is exactly N tokens. ``--gradient-checkpointing``
recomputes activations in the backward pass (the ``TrainConfig`` option of the same name where it
exists, else the model's own switch).

    python bench/train_throughput.py                                  # SmolLM2-135M, real 50-shot data
    python bench/train_throughput.py --shape 7b --seq-len 512 --steps 4 --gradient-checkpointing
    python bench/train_throughput.py --shape tiny --steps 3 --device cpu   # a smoke run on CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time

import torch

from metalora.data.budgets import TaskBudget, load_budgets
from metalora.data.root import resolve_data_root
from metalora.data.scenarios import scenario_tasks
from metalora.errors import MlbenchError
from metalora.methods import get_method, make_trainer
from metalora.models import load_model, pick_device, pick_dtype, prepare_tokenizer
from metalora.provenance import package_versions
from metalora.training.config import TrainConfig
from metalora.training.determinism import request_cublas_workspace

SHAPES = {  # Llama shapes for random-init throughput runs (no weights needed); vocab None: the tokenizer's
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": None},
    "135m": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
             "num_key_value_heads": 3, "vocab_size": None},
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": None},
    # Llama-2-7B: 4096 hidden, 11008 MLP, 32 layers, 32 heads (no grouped KV), 32000 vocabulary.
    "7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 32, "vocab_size": 32000},
}
TARGETS = {"examples_per_s": 0.9, "peak_memory": 1.5}  # metalora / lora: at least, at most


def random_model(shape: str, vocab_size: int, dtype: torch.dtype, device: str):
    """A random-init Llama allocated and initialised on ``device`` in ``dtype``."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    settings = dict(SHAPES[shape])
    settings["vocab_size"] = settings["vocab_size"] or vocab_size
    config = LlamaConfig(max_position_embeddings=4096, **settings)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


class ModuloTokenizer:
    """A tokenizer whose ids are taken modulo a smaller vocabulary (random-init shapes only)."""

    def __init__(self, tokenizer, vocab_size: int):
        self._tokenizer, self._vocab = tokenizer, vocab_size

    def __call__(self, text, **kwargs):
        encoded = self._tokenizer(text, **kwargs)
        return {"input_ids": [token % self._vocab for token in encoded["input_ids"]]}

    @property
    def eos_token_id(self):
        eos = self._tokenizer.eos_token_id
        return None if eos is None else eos % self._vocab

    @property
    def pad_token_id(self):
        return self._tokenizer.pad_token_id % self._vocab

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def lengthen(budgets: list[TaskBudget], tokenizer, seq_len: int) -> list[TaskBudget]:
    """Every example's prompt repeated until prompt + target reach ``seq_len`` tokens (the
    trainers then cut the prompt from the left to exactly ``seq_len``)."""
    longer = []
    for budget in budgets:
        examples = []
        for example in budget.examples:
            have = len(tokenizer(example.prompt + example.target)["input_ids"])
            repeats = -(-seq_len // max(1, have)) + 1
            examples.append(dataclasses.replace(example, prompt=example.prompt * repeats))
        longer.append(dataclasses.replace(budget, examples=examples))
    return longer


def per_step_examples(method: str, options, batch_size: int, tasks: int) -> tuple[int, int]:
    """(distinct examples, example passes) of one optimizer step."""
    if method != "metalora":
        return batch_size, batch_size
    count = options.tasks_per_iteration or tasks
    support_passes = options.support_size * options.effective_inner_steps
    query = options.query_size if options.variant not in ("reptile", "phase1_only") else 0
    return count * (options.support_size + options.query_size), count * (support_passes + query)


STEPS_CONFIGURED = 100_000  # far more than any bench runs: it stops each method after --steps


class _Enough(Exception):
    """Raised from the step callback once the bench has timed enough steps."""


def model_and_tokenizer(args, dtype: str, device: str):
    """The weights of ``--model``, or with ``--shape`` a random-init Llama of that shape on
    ``--model``'s tokenizer: (model, tokenizer, what was loaded, in words)."""
    if not args.shape:
        loaded = load_model(args.model, device=device, dtype=dtype)
        return loaded.model, loaded.tokenizer, loaded.source.identity
    from transformers import AutoTokenizer

    from metalora.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(args.model).path)
    prepare_tokenizer(tokenizer)
    model = random_model(args.shape, len(tokenizer), getattr(torch, dtype), device)
    if model.config.vocab_size < len(tokenizer):
        tokenizer = ModuloTokenizer(tokenizer, model.config.vocab_size)
    return model, tokenizer, f"random-init llama {args.shape}"


def train_config(args, checkpointing: bool) -> TrainConfig:
    values = {"steps": STEPS_CONFIGURED, "batch_size": args.batch_size,
              "max_seq_len": args.seq_len or args.max_seq_len, "lr": 1e-4}
    names = {field.name for field in dataclasses.fields(TrainConfig)}
    if "budget_rule" in names:  # a fixed number of updates, whatever the budgets
        values["budget_rule"] = "matched_updates"
    if "gradient_checkpointing" in names:
        values["gradient_checkpointing"] = checkpointing
    if "deterministic_training" in names:
        values["deterministic_training"] = args.deterministic_training
    return TrainConfig(**values)


def parse_method(method: str) -> tuple[str, str, bool]:
    """``metalora:stacked+ckpt`` -> (method name, inner loop or "", whether +ckpt is given)."""
    mode, suffix, rest = method.partition("+ckpt")
    if rest:
        raise MlbenchError(f"{method}: +ckpt goes at the end, e.g. metalora:stacked+ckpt")
    name, _, inner_loop = mode.partition(":")
    return name, inner_loop, bool(suffix)


def parse_method_steps(text: str | None) -> dict[str, tuple[int, int]]:
    """``metalora:stacked=40/8,lora=300/100`` -> {method: (steps, untimed first steps)}."""
    steps = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        method, _, counts = item.rpartition("=")
        total, _, warmup = counts.partition("/")
        if not method or not total.isdigit() or not warmup.isdigit() or int(warmup) >= int(total):
            raise MlbenchError(f"--method-steps: {item!r} is not METHOD=STEPS/WARMUP with WARMUP < STEPS, "
                               "e.g. metalora:stacked=40/8")
        steps[method] = (int(total), int(warmup))
    return steps


def measure(method: str, model, tokenizer, budgets, args, device: str) -> dict:
    steps, warmup = args.method_steps.get(method, (args.steps, args.warmup))
    name, inner_loop, own_checkpointing = parse_method(method)
    checkpointing = args.gradient_checkpointing or own_checkpointing
    trainer = make_trainer(name, {"inner_loop": inner_loop} if inner_loop else {})
    config = train_config(args, checkpointing)
    native_checkpointing = hasattr(config, "gradient_checkpointing")
    if checkpointing and not native_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    times: list[float] = []
    last = [0.0]
    losses: list[float] = []
    tokens: list[int] = []

    def on_step(record, *_):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - last[0])
        losses.append(record["loss"])
        tokens.append(record["tokens"])
        last[0] = now
        if len(times) >= steps:
            raise _Enough

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    record = {"method": method, "gradient_checkpointing": checkpointing,
              "train_cuda_graphs": getattr(config, "train_cuda_graphs", None),
              "deterministic_training": getattr(config, "deterministic_training", None)}
    try:
        last[0] = time.perf_counter()
        trainer.fit(model, tokenizer, budgets, config, on_step)
    except _Enough:
        pass
    except torch.cuda.OutOfMemoryError:
        return record | {"error": "out of memory"}
    except (RuntimeError, MlbenchError) as error:  # e.g. a combination a method refuses; the others still run
        return record | {"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}
    finally:
        if checkpointing and not native_checkpointing:
            model.gradient_checkpointing_disable()
    timed = times[warmup:] if len(times) > warmup else times
    step_s = sum(timed) / len(timed)
    tokens_per_step = sum(tokens[-len(timed):]) / len(timed)
    examples, passes = per_step_examples(name, trainer.options, args.batch_size, len(budgets))
    return record | {
        "steps": len(times), "timed_steps": len(timed), "seconds_per_step": round(step_s, 4),
        "examples_per_step": examples, "example_passes_per_step": passes, "tokens_per_step": tokens_per_step,
        "examples_per_s": round(examples / step_s, 2), "example_passes_per_s": round(passes / step_s, 2),
        "tokens_per_s": round(tokens_per_step / step_s, 1),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.startswith("cuda") else None,
        "last_loss": round(losses[-1], 4),
    }


def ratios(results: dict[str, dict]) -> dict:
    lora = results.get("lora", {})
    out = {}
    for method, figures in results.items():
        if not method.startswith("metalora") or "error" in figures or "error" in lora or not lora:
            continue
        entry = {"examples_per_s": figures["examples_per_s"] / lora["examples_per_s"],
                 "tokens_per_s": figures["tokens_per_s"] / lora["tokens_per_s"]}
        if figures["peak_memory_gib"] and lora["peak_memory_gib"]:
            entry["peak_memory"] = figures["peak_memory_gib"] / lora["peak_memory_gib"]
        # Unknown without a device memory figure (CPU): no verdict rather than a wrong one.
        entry["meets_targets"] = (entry["examples_per_s"] >= TARGETS["examples_per_s"]
                                  and entry["peak_memory"] <= TARGETS["peak_memory"]) if "peak_memory" in entry else None
        out[f"{method}/lora"] = {key: round(value, 3) if isinstance(value, float) else value
                                 for key, value in entry.items()}
    return out


def best_metalora(results: dict[str, dict], ratio: dict) -> dict | None:
    """The fastest MeTA-LoRA mode listed (by examples/s) and its ratios to LoRA."""
    modes = [m for m, figures in results.items() if m.startswith("metalora") and "error" not in figures]
    if not modes:
        return None
    fastest = max(modes, key=lambda m: results[m]["examples_per_s"])
    return {"method": fastest, **ratio.get(f"{fastest}/lora", {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="weights to train (and the tokenizer for --shape)")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random-init Llama of this shape instead of the weights")
    parser.add_argument("--methods", default="lora,hydralora,metalora,metalora:stacked,metalora:batched",
                        help="comma-separated; metalora:MODE is MeTA-LoRA with inner_loop=MODE (stacked, batched); "
                             "a +ckpt suffix checkpoints activations for that method only")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    parser.add_argument("--method-steps", default=None,
                        help="per-method STEPS/WARMUP, e.g. lora=300/100,metalora:stacked=40/8: LoRA's decoder "
                             "passes become CUDA graphs over its first ~100 updates, a meta-iteration is 10x longer")
    parser.add_argument("--shots", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=None, help="make every example exactly this many tokens")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--deterministic-training", default="on", choices=("on", "off"),
                        help="PyTorch's deterministic kernels while training (the run default, on) or not")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on a GPU, float32 on CPU")
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    request_cublas_workspace()  # before CUDA starts: training is deterministic by default (cuBLAS needs it)
    try:
        args.method_steps = parse_method_steps(args.method_steps)
    except MlbenchError as error:
        parser.error(str(error))  # one line, exit code 2

    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    started = time.perf_counter()
    model, tokenizer, described = model_and_tokenizer(args, dtype, device)
    model_s = time.perf_counter() - started
    budgets = list(load_budgets(resolve_data_root(args.data_root), scenario_tasks("multitask"), args.shots, seed=0))
    if args.seq_len:
        budgets = lengthen(budgets, tokenizer, args.seq_len)
    header = {
        "model": described, "parameters": sum(p.numel() for p in model.parameters()), "model_ready_s": round(model_s, 1),
        "device": device, "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "dtype": dtype, "tasks": len(budgets), "shots": args.shots, "batch_size": args.batch_size,
        "seq_len": args.seq_len, "max_seq_len": args.seq_len or args.max_seq_len,
        "gradient_checkpointing": args.gradient_checkpointing,
        "deterministic_training": args.deterministic_training, "steps": args.steps, "warmup": args.warmup,
        "method_steps": {method: list(counts) for method, counts in args.method_steps.items()},
        "versions": package_versions(("torch", "transformers", "peft")),
    }
    print(json.dumps({"setup": header}), flush=True)
    results = {}
    for method in args.methods.split(","):
        get_method(parse_method(method)[0])  # an unknown name fails here, in one line
        results[method] = measure(method, model, tokenizer, budgets, args, device)
        print(json.dumps(results[method]), flush=True)
        gc.collect()
    ratio = ratios(results)
    print(json.dumps({"summary": True, "setup": header, "methods": results, "ratios": ratio,
                      "best_metalora": best_metalora(results, ratio),
                      "targets": {"metalora/lora examples_per_s at least": TARGETS["examples_per_s"],
                                  "metalora/lora peak_memory at most": TARGETS["peak_memory"]}}), flush=True)


if __name__ == "__main__":
    main()
