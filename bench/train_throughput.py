"""Training throughput of the three methods, measured side by side in one process.

Prints one JSON line per method: tokens per second (non-padding tokens through a forward and
backward pass, counting every inner and query pass of MeTA-LoRA; ``metalora:batched`` reuses the sequential
run's count, so list it after ``metalora``), seconds per optimizer step,
and peak GPU memory. Use on the GPU machine for absolute figures; on CPU only the ratios mean
anything.

    python bench/train_throughput.py --model smollm2-135m --steps 20 --shots 50
    python bench/train_throughput.py --shape 1b --steps 10     # random-init Llama of ~1B parameters
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from metalora.data.budgets import load_budgets
from metalora.data.root import resolve_data_root
from metalora.data.scenarios import scenario_tasks
from metalora.methods import make_trainer
from metalora.models import load_model, pick_device, pick_dtype, prepare_tokenizer
from metalora.training.config import TrainConfig

SHAPES = {  # Llama shapes for random-init throughput runs (no weights needed)
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8),
}


def random_model(shape: str, tokenizer, dtype, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048, **SHAPES[shape])
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype)


class TokenCounter:
    """Counts non-padding tokens of every forward pass by wrapping the model's forward."""

    def __init__(self, model):
        self.tokens = 0
        self.original = model.forward

        def counting_forward(*args, **kwargs):
            mask = kwargs.get("attention_mask")
            if mask is not None:
                self.tokens += int(mask.sum())
            return self.original(*args, **kwargs)

        model.forward = counting_forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random-init Llama of this shape instead of --model weights")
    parser.add_argument(
        "--methods", default="lora,hydralora,metalora,metalora:batched",
        help="comma-separated; metalora:batched is MeTA-LoRA with inner_loop=batched",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--shots", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--device", default=None)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()

    device = pick_device(args.device)
    dtype = pick_dtype(None, device)
    loaded = load_model(args.model, device=device, dtype=dtype)
    tokenizer = loaded.tokenizer
    prepare_tokenizer(tokenizer)
    root = resolve_data_root(args.data_root)
    budgets = load_budgets(root, scenario_tasks("multitask"), args.shots, seed=0)
    useful_tokens: dict[str, float] = {}
    for method in args.methods.split(","):
        model = random_model(args.shape, tokenizer, getattr(torch, dtype), device) if args.shape else loaded.model
        counter = TokenCounter(model)
        config = TrainConfig(steps=args.steps, batch_size=args.batch_size, max_seq_len=args.max_seq_len, lr=1e-4)
        name, _, inner_loop = method.partition(":")
        trainer = make_trainer(name, {"inner_loop": inner_loop} if inner_loop else {})
        times: list[float] = []
        last = [time.perf_counter()]

        def on_step(record, times=times, last=last):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start_tokens = counter.tokens
        last[0] = time.perf_counter()
        adapter = trainer.fit(model, tokenizer, budgets, config, on_step)
        model.forward = counter.original
        warm = times[2:] if len(times) > 4 else times  # the first steps include allocator and kernel warm-up
        step_time = sum(warm) / len(warm)
        tokens_per_step = (counter.tokens - start_tokens) / len(times)
        # The batched inner loop runs under vmap without an attention mask, so the counter cannot
        # see its tokens; with the same seed it draws the same episodes as the sequential loop.
        if method.endswith(":batched"):
            tokens_per_step = useful_tokens.get(name, float("nan"))
        useful_tokens[method] = tokens_per_step
        print(json.dumps({
            "method": method,
            "model": args.shape and f"random-init llama {args.shape}" or loaded.source.identity,
            "device": device, "dtype": dtype, "steps": len(times), "batch_size": args.batch_size,
            "tokens_per_step": tokens_per_step, "seconds_per_step": round(step_time, 4),
            "tokens_per_second": round(tokens_per_step / step_time, 1),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
            "final_loss": round(adapter.training_log[-1]["loss"], 4),
        }), flush=True)


if __name__ == "__main__":
    main()
