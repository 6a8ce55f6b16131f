"""LoRA-family adapters exported in peft's format load with peft and lm-eval and give mlbench's logits."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from baselines.dora import DoraTrainer
from baselines.hydralora import HydraLoraTrainer
from baselines.lora import LoraTrainer
from metalora.errors import MlbenchError
from metalora.methods.meta import MetaLoraTrainer, MetaOptions
from metalora.training.adapters import PEFT_FILES
from metalora.training.config import TrainConfig
from tests.conftest import make_tiny_llama
from tests.helpers import toy_tasks

CONFIG = TrainConfig(rank=4, alpha=8, dropout=0.0, target_modules=("gate_proj", "up_proj", "down_proj"),
                     budget_rule="matched_updates", steps=3, lr=5e-2, batch_size=4, max_seq_len=32, seed=0)
TASKS = toy_tasks(per_task=4)  # 3 steps of 4 (or 3 meta-iterations of 2 + 2) see every example
TRAINERS = {
    "lora": lambda: LoraTrainer(),
    "dora": lambda: DoraTrainer(),
    "metalora": lambda: MetaLoraTrainer(MetaOptions(inner_steps=1, support_size=2, query_size=2)),
}


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    make_tiny_llama().save_pretrained(folder)
    from tests.conftest import _byte_tokenizer

    _byte_tokenizer().save_pretrained(folder)
    return folder


def _load_base(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


INPUT = torch.tensor([[5, 17, 99, 3, 200, 42, 7, 64]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT).logits


@pytest.mark.parametrize("method", list(TRAINERS))
def test_exported_adapter_loads_in_peft_with_the_same_logits(method, base_folder, tokenizer, tmp_path):
    from peft import PeftModel

    adapter = TRAINERS[method]().fit(_load_base(base_folder), tokenizer, TASKS, CONFIG)
    b_norm = sum(t.abs().sum().item() for name, t in adapter.state.items() if "lora_B" in name)
    assert b_norm > 0  # trained: the adapter moves the logits
    folder = adapter.export_peft(tmp_path / "peft", str(base_folder), "weights-sha256:abc")
    assert sorted(p.name for p in folder.iterdir()) == sorted(PEFT_FILES)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base_folder) and config["peft_type"] == "LORA"
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["use_dora"] == (method == "dora")
    with safe_open(folder / "adapter_model.safetensors", "pt") as handle:
        assert handle.metadata()["mlbench_model_identity"] == "weights-sha256:abc"

    loaded = PeftModel.from_pretrained(_load_base(base_folder), folder).eval()
    live = adapter.attach(_load_base(base_folder)).eval()
    merged = adapter.merge(_load_base(base_folder)).eval()
    base = _logits(_load_base(base_folder))
    assert not torch.allclose(_logits(live), base, atol=1e-3)  # the adapter changes the answer
    assert torch.allclose(_logits(loaded), _logits(live), atol=1e-6, rtol=0)
    assert torch.allclose(_logits(loaded), _logits(merged), atol=1e-5, rtol=0)


def test_lm_eval_loads_the_exported_adapter(base_folder, tokenizer, tmp_path):
    """lm-eval's ``--model_args pretrained=BASE,peft=FOLDER`` path: HFLM with ``peft=``."""
    from lm_eval.models.huggingface import HFLM
    from peft import PeftModel

    adapter = LoraTrainer().fit(_load_base(base_folder), tokenizer, TASKS, CONFIG)
    folder = adapter.export_peft(tmp_path / "peft", str(base_folder))
    lm = HFLM(pretrained=str(base_folder), peft=str(folder), batch_size=1, device="cpu", dtype="float32")
    assert isinstance(lm.model, PeftModel)
    live = adapter.attach(_load_base(base_folder)).eval()
    assert torch.allclose(_logits(lm.model.eval()), _logits(live), atol=1e-6, rtol=0)


def test_hydralora_has_no_peft_format(base_folder, tokenizer, tmp_path):
    adapter = HydraLoraTrainer().fit(_load_base(base_folder), tokenizer, TASKS, CONFIG)
    with pytest.raises(MlbenchError, match="a hydralora adapter has no peft format"):
        adapter.export_peft(tmp_path / "peft", str(base_folder))
    assert not (tmp_path / "peft").exists()
