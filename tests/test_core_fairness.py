"""Fair training budgets on tiny models: matched example passes, every example seen, one loss
weighting for every method, float32 adapters under a bf16 base, and what each run records of its
cost."""

import pytest
import torch

import metalora.methods.meta
import metalora.training.supervised
from metalora.data.budgets import TaskBudget
from metalora.data.example import Example
from metalora.errors import MlbenchError
from metalora.methods import METHODS, make_trainer
from metalora.training.batching import batch_loss, collate, encode_example, target_tokens
from metalora.training.budget import matched_passes
from metalora.training.config import TrainConfig
from tests.conftest import make_tiny_llama
from tests.helpers import toy_tasks

# one sweep cell's rows: (method, its options); the phase2_only control draws what MeTA-LoRA draws
ROWS = {
    "lora": ("lora", {}),
    "dora": ("dora", {}),
    "hydralora": ("hydralora", {"num_heads": 2}),
    "metalora": ("metalora", {"inner_steps": 1, "support_size": 2, "query_size": 2}),
    "phase2_only": ("metalora", {"variant": "phase2_only", "support_size": 2, "query_size": 2}),
}
CONFIG = {"rank": 2, "alpha": 4, "batch_size": 4, "lr": 1e-3, "max_seq_len": 64, "seed": 4}


def recording_collate(seen: set):
    """``collate`` that remembers every example it batches (each toy example's ids are unique)."""
    real = collate

    def wrapper(batch, *args, **kwargs):
        seen.update(item.input_ids for item in batch)
        return real(batch, *args, **kwargs)

    return wrapper


def fit_all(monkeypatch, tokenizer, tasks, config):
    """Train every row on ``tasks``; returns {row: (adapter, ids of the examples batched)}."""
    results = {}
    for row, (method, options) in ROWS.items():
        seen: set = set()
        monkeypatch.setattr(metalora.training.supervised, "collate", recording_collate(seen))
        monkeypatch.setattr(metalora.methods.meta, "collate", recording_collate(seen))
        adapter = make_trainer(method, options).fit(make_tiny_llama(), tokenizer, tasks, config)
        results[row] = (adapter, seen)
    return results


def all_ids(tokenizer, tasks):
    return {encode_example(tokenizer, e, 64).input_ids for task in tasks for e in task.examples}


def test_matched_compute_gives_every_method_the_same_passes(monkeypatch, tokenizer):
    tasks = toy_tasks(3, per_task=10)
    config = TrainConfig(**CONFIG, budget_rule="matched_compute", compute_epochs=2.5)
    target = matched_passes(2.5, [10, 10, 10])
    assert target == 75
    results = fit_all(monkeypatch, tokenizer, tasks, config)
    # passes per update: a batch of 4; 3 tasks x (k=1 x 2 support + 2 query); 3 tasks x (2 + 2)
    per_update = {"lora": 4, "dora": 4, "hydralora": 4, "metalora": 3 * (1 * 2 + 2), "phase2_only": 3 * (2 + 2)}
    costs = {row: adapter.training_cost for row, (adapter, _) in results.items()}
    for row, cost in costs.items():
        assert cost["budget_rule"] == "matched_compute"
        assert target <= cost["example_passes"] < target + per_update[row]  # equal within one batch
        assert cost["example_passes"] == cost["outer_updates"] * per_update[row]
        assert cost["outer_updates"] == len(results[row][0].training_log)
        assert cost["min_epochs"] >= 1
    assert {row: c["example_passes"] for row, c in costs.items()} == {
        "lora": 76, "dora": 76, "hydralora": 76, "metalora": 84, "phase2_only": 84
    }
    # trainable parameters: 2 layers x 3 MLP projections (in -> out: 32 -> 48, 32 -> 48, 48 -> 32), rank 2
    lora_params = 2 * sum(2 * i + 2 * o for i, o in ((32, 48), (32, 48), (48, 32)))
    assert costs["lora"]["trainable_parameters"] == costs["metalora"]["trainable_parameters"] == lora_params
    assert costs["phase2_only"]["trainable_parameters"] == lora_params
    # DoRA adds a magnitude per output feature
    assert costs["dora"]["trainable_parameters"] == lora_params + 2 * (48 + 48 + 32)
    # HydraLoRA: shared A (2 x in), two B heads (2 x out each), a router (2 x in)
    hydra_params = 2 * sum(2 * i + 2 * 2 * o + 2 * i for i, o in ((32, 48), (32, 48), (48, 32)))
    assert costs["hydralora"]["trainable_parameters"] == hydra_params
    # every row put every budget example through at least one forward/backward pass
    for row, (_, seen) in results.items():
        assert seen == all_ids(tokenizer, tasks), row


def test_recorded_tokens_are_the_tokens_of_the_passes(tokenizer):
    tasks = toy_tasks(2, per_task=4)
    config = TrainConfig(**CONFIG, budget_rule="matched_updates", steps=2)
    adapter = make_trainer("lora", {}).fit(make_tiny_llama(), tokenizer, tasks, config)
    # two batches of four: with equal-weight rounds each task's four examples appear once
    lengths = [len(encode_example(tokenizer, e, 64).input_ids) for task in tasks for e in task.examples]
    assert adapter.training_cost["tokens"] == sum(lengths)
    assert adapter.training_cost["min_epochs"] == 1.0
    assert [record["examples"] for record in adapter.training_log] == [4, 4]
    options = {"inner_steps": 3, "support_size": 2, "query_size": 2}
    meta = make_trainer("metalora", options).fit(make_tiny_llama(), tokenizer, tasks, config)
    per_example = {len(encode_example(tokenizer, e, 64).input_ids) for task in tasks for e in task.examples}
    assert len(per_example) == 1  # toy examples of one length: tokens = passes x that length
    assert meta.training_cost["example_passes"] == 2 * 2 * (3 * 2 + 2)
    assert meta.training_cost["tokens"] == meta.training_cost["example_passes"] * per_example.pop()


def test_full_budgets_of_unequal_size_train_at_least_one_epoch(tokenizer):
    """Capped full pools differ in size; tasks weigh equally, so the largest sets the count."""
    tasks = [toy_tasks(1, per_task=size)[0] for size in (24, 7, 13)]
    tasks = [TaskBudget(f"t{i}", task.examples, []) for i, task in enumerate(tasks)]
    for row in ("lora", "hydralora"):
        method, options = ROWS[row]
        with pytest.raises(MlbenchError, match="raise compute_epochs to at least 1.64"):
            make_trainer(method, options).plan_budget(
                TrainConfig(**CONFIG, budget_rule="matched_compute", compute_epochs=1), tasks
            )
        config = TrainConfig(**CONFIG, budget_rule="epochs", epochs=1)
        adapter = make_trainer(method, options).fit(make_tiny_llama(), tokenizer, tasks, config)
        assert adapter.training_cost["min_epochs"] >= 1.0
        assert adapter.training_cost["outer_updates"] == 18  # 3 tasks x 24 visits / batch 4


def test_a_run_that_would_leave_examples_unseen_is_refused_before_training(tokenizer):
    tasks = toy_tasks(3, per_task=10)
    config = TrainConfig(**CONFIG, budget_rule="matched_updates", steps=3)
    with pytest.raises(MlbenchError, match=r"lora gets 3 updates of 4 example passes, too few .* raise steps to at least 8"):
        METHODS["lora"].plan_budget(METHODS["lora"].make_options({}), config, tasks)
    with pytest.raises(MlbenchError, match="raise steps to at least 8"):  # fit checks too, before any step
        make_trainer("lora", {}).fit(make_tiny_llama(), tokenizer, tasks, config)
    assert METHODS["base"].plan_budget(METHODS["base"].make_options({}), config, tasks) is None


def answer_loss_parts(model, tokenizer, examples_a, examples_b, weighting):
    encoded = [encode_example(tokenizer, e, 256) for e in examples_a + examples_b]
    ids = [0] * len(examples_a) + [1] * len(examples_b)
    batch = collate(encoded, tokenizer.pad_token_id, task_ids=ids)
    part_a = collate(encoded[: len(examples_a)], tokenizer.pad_token_id)
    part_b = collate(encoded[len(examples_a) :], tokenizer.pad_token_id)
    with torch.no_grad():
        total = batch_loss(model, batch, weighting)
        loss_a, loss_b = batch_loss(model, part_a), batch_loss(model, part_b)
    return total, loss_a, loss_b, target_tokens(part_a), target_tokens(part_b)


@pytest.mark.parametrize("weighting", ["task", "token"])
def test_ten_fold_answers_keep_their_task_weight_only_under_task_weighting(tokenizer, weighting):
    model = make_tiny_llama()
    short = [Example("a", f"question {i}: ", "yes") for i in range(3)]
    longer = [Example("a", e.prompt, "yes" * 10) for e in short]
    other = [Example("b", f"other {i}: ", "no") for i in range(2)]
    weights = []
    for task_a in (short, longer):
        total, loss_a, loss_b, tokens_a, tokens_b = answer_loss_parts(model, tokenizer, task_a, other, weighting)
        weight_a = 0.5 if weighting == "task" else tokens_a / (tokens_a + tokens_b)
        torch.testing.assert_close(total, weight_a * loss_a + (1 - weight_a) * loss_b)
        weights.append(weight_a)
    if weighting == "task":
        assert weights == [0.5, 0.5]
    else:
        # byte tokens: " yes" + eos is 5 target tokens per answer, " no" + eos 4, ten-fold answers 32
        assert weights == [15 / 23, 96 / 104]


def test_weighted_loss_by_hand(tokenizer):
    """Two tasks in one batch, the loss computed from log-softmax by hand: the task mean of token
    means (task) and the mean over all target tokens (token)."""
    model = make_tiny_llama()
    examples = [Example("a", "q: ", "yes"), Example("a", "r: ", "no"), Example("b", "s: ", "maybe")]
    encoded = [encode_example(tokenizer, e, 64) for e in examples]
    batch = collate(encoded, tokenizer.pad_token_id, task_ids=[3, 3, 8])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        per_task = {3: [], 8: []}
        for row, item in enumerate(encoded):
            log_probs = torch.log_softmax(logits[row].double(), dim=-1)
            for position in range(1, len(item.input_ids)):
                if item.labels[position] != -100:
                    per_task[[3, 3, 8][row]].append(-log_probs[position - 1, item.labels[position]].item())
        # byte tokens, the prompt's trailing space moved onto the target: " yes", " no", " maybe" + eos
        assert [len(v) for v in per_task.values()] == [5 + 4, 7]
        by_task = sum(sum(v) / len(v) for v in per_task.values()) / 2
        by_token = sum(sum(v) for v in per_task.values()) / 16
        assert batch_loss(model, batch, "task").item() == pytest.approx(by_task, rel=1e-5)
        assert batch_loss(model, batch, "token").item() == pytest.approx(by_token, rel=1e-5)


def test_loss_weighting_reaches_every_trainer(tokenizer):
    short = [Example("a", f"question {i}: ", "yes") for i in range(4)]
    longer = [Example("b", f"other {i}: ", "no" * 12) for i in range(4)]
    tasks = [TaskBudget("a", short, []), TaskBudget("b", longer, [])]
    for method, options in ROWS.values():
        states = {}
        for weighting in ("task", "token"):
            config = TrainConfig(**CONFIG, budget_rule="matched_updates", steps=2, loss_weighting=weighting)
            states[weighting] = make_trainer(method, options).fit(make_tiny_llama(), tokenizer, tasks, config).state
        assert any(not torch.equal(states["task"][k], states["token"][k]) for k in states["task"]), (method, options)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_adapter_parameters_are_float32_under_a_bf16_base(tokenizer, row):
    """Every method trains float32 adapter parameters on a bf16 base (in bf16 an Adam step below
    ~1/256 of a weight rounds to nothing), and the base comes back in bf16, untouched."""
    method, options = ROWS[row]
    model = make_tiny_llama(dtype=torch.bfloat16)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    config = TrainConfig(**CONFIG, budget_rule="matched_updates", steps=2)
    trained_dtypes = set()

    def spy(record):  # during training the base is frozen: what requires grad is the adapter
        trained_dtypes.update(param.dtype for param in model.parameters() if param.requires_grad)

    adapter = make_trainer(method, options).fit(model, tokenizer, toy_tasks(2, per_task=4), config, on_step=spy)
    assert trained_dtypes == {torch.float32}
    assert adapter.state and {t.dtype for t in adapter.state.values()} == {torch.float32}
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    assert all(after[n].dtype == torch.bfloat16 and torch.equal(after[n], before[n]) for n in before)


def test_table2_plan_matches_every_cell_and_sees_every_example(data_root):
    """configs/table2.yaml as planned from the real data (seed 0): in every cell (examples per
    task) each method's passes are the cell's P plus less than one of its updates; every run sees
    every budget example; full data trains at least one epoch; phase2_only is in every MeTA-LoRA cell."""
    from collections import defaultdict
    from dataclasses import replace
    from pathlib import Path

    from metalora.runs.runconfig import ExecutionOptions
    from metalora.runs.sweep import load_sweep, prepare_sweep

    sweep = load_sweep(Path(__file__).resolve().parents[1] / "configs" / "table2.yaml")
    sweep = replace(sweep, runs=[run for run in sweep.runs if run.get("seed", 0) == 0])
    plan = prepare_sweep(sweep, ExecutionOptions(device="cpu", data_root=str(data_root.path)))
    cells = defaultdict(dict)
    for prepared in plan:
        if prepared.budget is None:
            assert prepared.config.method == "base"
            continue
        variant = prepared.config.method_options.get("variant", "")
        cells[prepared.config.shots][f"{prepared.config.method}{'/' + variant if variant else ''}"] = prepared
    assert sorted(cells, key=str) == [10, 100, 25, 50, "full"]
    for shots, rows in cells.items():
        expected = {"lora", "hydralora"} | (set() if shots == "full" else {"metalora/first_order", "metalora/phase2_only"})
        assert set(rows) == expected, shots
        sizes = [len(budget.examples) for budget in next(iter(rows.values())).budgets]
        target = matched_passes(4 if shots == "full" else 32, sizes)
        for name, prepared in rows.items():
            budget = prepared.budget
            per_update = budget.passes // budget.updates
            assert budget.rule == "matched_compute" and target <= budget.passes < target + per_update, (shots, name)
            assert budget.min_epochs >= 1, (shots, name)
            assert prepared.config.train.loss_weighting == "task"
    assert cells[50]["lora"].budget.passes == cells[50]["metalora/first_order"].budget.passes == 8000
    assert cells["full"]["lora"].budget.passes == 20000
