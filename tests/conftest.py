"""Shared fixtures: tiny random-init Llama models and a byte-level tokenizer built in the test,
plus the data root (``MLBENCH_DATA_DIR``, defaulting to the shared mirror beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    vocab["<eos>"] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")


@pytest.fixture(scope="session")
def tokenizer():
    return _byte_tokenizer()


def make_tiny_llama(seed: int = 0, vocab_size: int = 257, dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        initializer_range=0.3,  # large enough that a LoRA on the MLP can move the logits
    )
    return LlamaForCausalLM(config).to(dtype).eval()


@pytest.fixture
def tiny_model():
    return make_tiny_llama()


@pytest.fixture(scope="session")
def data_root():
    from metalora.data.root import resolve_data_root

    return resolve_data_root(os.environ.get("MLBENCH_DATA_DIR") or SHARED_DATA)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random-init Llama saved as an ordinary HF folder: what a user's --model points at."""
    folder = tmp_path_factory.mktemp("tiny-model")
    model = make_tiny_llama()
    model.config.max_position_embeddings = 2048
    model.save_pretrained(folder)
    _byte_tokenizer().save_pretrained(folder)
    return folder
