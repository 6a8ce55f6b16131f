"""MeTA-LoRA against hand-computed references that mutate the model's parameters directly and use
ordinary ``loss.backward()``: an independent route from the trainer's functional inner loop."""

import pytest
import torch
from peft import get_peft_model_state_dict

from metalora.data.budgets import TaskBudget
from metalora.data.example import Example
from metalora.methods.meta import (
    MetaLoraTrainer,
    MetaOptions,
    make_outer_optimizer,
    meta_update_direction,
)
from metalora.training.adapters import LoraAdapter
from metalora.training.batching import batch_loss, collate, encode_example, target_tokens
from metalora.training.config import TrainConfig
from metalora.training.packing import pack_task_batches
from metalora.training.sampling import EpisodeSampler
from tests.conftest import make_tiny_llama
from tests.helpers import toy_tasks

MLP = ["gate_proj", "up_proj", "down_proj"]


def lora_model(dtype=torch.float32, seed=5):
    """A peft LoRA model on a tiny Llama with non-zero A and B, dropout off."""
    shape = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": MLP}
    model = LoraAdapter(shape, {}).attach(make_tiny_llama(dtype=dtype))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator, dtype=dtype) * 0.1)
    return model


def shared_params(model):
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def episode(tokenizer, tasks=2, size=3):
    """Support and query batches of ``tasks`` toy tasks, disjoint items."""
    result = []
    for task in toy_tasks(tasks, per_task=2 * size):
        encoded = [encode_example(tokenizer, example, 64) for example in task.examples]
        result.append((collate(encoded[:size], tokenizer.pad_token_id), collate(encoded[size:], tokenizer.pad_token_id)))
    return result


def set_params(model, values):
    with torch.no_grad():
        for name, param in shared_params(model).items():
            param.copy_(values[name])


def sgd_by_mutation(model, batch, steps, lr):
    for _ in range(steps):
        model.zero_grad()
        batch_loss(model, batch).backward()
        with torch.no_grad():
            for param in shared_params(model).values():
                param -= lr * param.grad


def query_grad_by_mutation(model, batch):
    model.zero_grad()
    batch_loss(model, batch).backward()
    return {name: param.grad.clone() for name, param in shared_params(model).items()}


def snapshot(model):
    return {name: param.detach().clone() for name, param in shared_params(model).items()}


def test_meta_step_equals_hand_computed_first_order_maml(tokenizer):
    model, alpha, beta, k = lora_model(), 0.05, 0.1, 3
    batches = episode(tokenizer)
    theta = snapshot(model)
    expected_grad = {name: torch.zeros_like(value) for name, value in theta.items()}
    for support, query in batches:
        set_params(model, theta)
        sgd_by_mutation(model, support, k, alpha)
        for name, grad in query_grad_by_mutation(model, query).items():
            expected_grad[name] += grad / len(batches)
    set_params(model, theta)

    options = MetaOptions(inner_steps=k, inner_lr=alpha, outer_optimizer="sgd")
    shared = shared_params(model)
    direction, stats = meta_update_direction(model, shared, batches, options)
    optimizer = make_outer_optimizer(list(shared.values()), options, beta, 0.0)
    for name, param in shared.items():
        param.grad = direction[name]
    optimizer.step()
    for name, param in shared.items():
        torch.testing.assert_close(param.detach(), theta[name] - beta * expected_grad[name], atol=1e-6, rtol=1e-5)
    assert stats["query_loss"] > 0 and stats["support_loss"] > 0
    # The inner loop really moved the weights: the query gradient at theta itself is different.
    set_params(model, theta)
    at_theta = query_grad_by_mutation(model, batches[0][1])
    assert not all(torch.allclose(at_theta[n], expected_grad[n], atol=1e-4) for n in theta)


def test_phase2_only_is_multitask_gradient_on_support_and_query_sets(tokenizer):
    """No inner loop: the gradient of the mean over tasks of each task's loss on all the examples
    of the iteration (support and query together), the same examples every variant uses."""
    model = lora_model()
    batches = episode(tokenizer, tasks=3)
    union = []
    for task in toy_tasks(3, per_task=6):
        union.append(collate([encode_example(tokenizer, e, 64) for e in task.examples], tokenizer.pad_token_id))
    model.zero_grad()
    (sum(batch_loss(model, batch) for batch in union) / 3).backward()
    expected = {name: param.grad.clone() for name, param in shared_params(model).items()}
    for options in (MetaOptions(variant="phase2_only"), MetaOptions(inner_steps=5, variant="phase2_only")):
        direction, stats = meta_update_direction(model, shared_params(model), batches, options)
        for name, value in expected.items():
            torch.testing.assert_close(direction[name], value, atol=1e-7, rtol=1e-5)
        assert stats["support_loss"] is None and stats["query_loss"] > 0


def test_inner_steps_zero_is_refused_where_the_support_sets_would_go_unused():
    from metalora.errors import MlbenchError

    with pytest.raises(MlbenchError, match="inner_steps=0 would leave variant first_order's support sets unused"):
        MetaOptions(inner_steps=0).validate()
    MetaOptions(inner_steps=0, variant="phase2_only").validate()


def test_second_order_gradient_matches_functorch_through_unrolled_loop(tokenizer):
    """Reference: torch.func.grad of a pure function that unrolls the k inner SGD steps (nested
    functorch transforms), a different mechanism from the trainer's autograd.grad(create_graph)."""
    from torch.func import functional_call, grad
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model, alpha, k = lora_model(), 0.5, 2
    batches = episode(tokenizer)
    theta = snapshot(model)

    def loss_at(params, batch):
        logits = functional_call(model, params, args=(), kwargs={"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}).logits
        from metalora.training.batching import lm_loss

        return lm_loss(logits, batch["labels"])

    def meta_objective(params):
        total = 0.0
        for support, query in batches:
            adapted = params
            for _ in range(k):
                step = grad(loss_at)(adapted, support)
                adapted = {name: adapted[name] - alpha * step[name] for name in adapted}
            total = total + loss_at(adapted, query) / len(batches)
        return total

    with sdpa_kernel(SDPBackend.MATH):
        reference = grad(meta_objective)(theta)
    second, _ = meta_update_direction(
        model, shared_params(model), batches, MetaOptions(inner_steps=k, inner_lr=alpha, variant="second_order")
    )
    first, _ = meta_update_direction(model, shared_params(model), batches, MetaOptions(inner_steps=k, inner_lr=alpha))
    for name in theta:
        torch.testing.assert_close(second[name], reference[name], atol=1e-6, rtol=1e-4)
    # The first-order approximation is measurably different here: the comparison has teeth.
    assert max((first[n] - reference[n]).abs().max().item() for n in theta) > 1e-3


def test_reptile_and_phase1_only_move_toward_adapted_weights(tokenizer):
    """k SGD steps on the support set, then one on the query set (the examples first-order uses);
    theta moves toward the mean adapted weights through the shared outer optimizer."""
    model, alpha, beta, k = lora_model(), 0.05, 0.3, 2
    batches = episode(tokenizer)
    theta = snapshot(model)
    adapted_mean = {name: torch.zeros_like(value) for name, value in theta.items()}
    for support, query in batches:
        set_params(model, theta)
        sgd_by_mutation(model, support, k, alpha)
        sgd_by_mutation(model, query, 1, alpha)
        for name, value in snapshot(model).items():
            adapted_mean[name] += value / len(batches)
    for variant in ("reptile", "phase1_only"):
        set_params(model, theta)
        options = MetaOptions(inner_steps=k, inner_lr=alpha, variant=variant, outer_optimizer="sgd")
        shared = shared_params(model)
        direction, stats = meta_update_direction(model, shared, batches, options)
        assert stats["query_loss"] > 0 and stats["support_loss"] > 0
        optimizer = make_outer_optimizer(list(shared.values()), options, beta, 0.0)
        for name, param in shared.items():
            param.grad = direction[name]
        optimizer.step()
        for name, param in shared.items():
            expected = theta[name] + beta * (adapted_mean[name] - theta[name])
            torch.testing.assert_close(param.detach(), expected, atol=1e-6, rtol=1e-5)


def test_token_weighting_weighs_tasks_by_their_query_target_tokens(tokenizer):
    """``token``: the meta-gradient is the gradient of the loss over all query target tokens;
    ``task``: each task's query gradient weighs the same, whatever its answers' length."""
    model, alpha, k = lora_model(), 0.05, 1
    batches = episode(tokenizer, tasks=2)
    # a task whose answers are ten times as long
    long = [Example("long", f"task 9 item {i}: ", "xyz" * 10) for i in range(6)]
    encoded = [encode_example(tokenizer, e, 128) for e in TaskBudget("long", long, []).examples]
    batches.append((collate(encoded[:3], tokenizer.pad_token_id), collate(encoded[3:], tokenizer.pad_token_id)))
    options = MetaOptions(inner_steps=k, inner_lr=alpha)
    theta = snapshot(model)
    per_task = []
    for support, query in batches:
        set_params(model, theta)
        sgd_by_mutation(model, support, k, alpha)
        per_task.append(query_grad_by_mutation(model, query))
    set_params(model, theta)
    tokens = [target_tokens(query) for _, query in batches]
    assert tokens[2] > 5 * tokens[0]
    for weighting, weights in (("task", [1 / 3] * 3), ("token", [t / sum(tokens) for t in tokens])):
        direction, _ = meta_update_direction(model, shared_params(model), batches, options, weighting)
        for name in theta:
            expected = sum(w * grads[name] for w, grads in zip(weights, per_task))
            torch.testing.assert_close(direction[name], expected, atol=1e-7, rtol=1e-5)


def test_episode_sampler_draws_disjoint_sets_within_budget():
    sizes = [16, 20, 50, 30, 17]
    sampler = EpisodeSampler(sizes, 3, 8, 8, seed=0)
    seen_tasks = set()
    for _ in range(50):
        episode_ = sampler.next_episode()
        assert len(episode_) == 3
        for task, support, query in episode_:
            seen_tasks.add(task)
            assert len(support) == 8 and len(query) == 8
            assert not set(support) & set(query)
            assert max(support + query) < sizes[task]
    assert seen_tasks == {0, 1, 2, 3, 4}
    again = EpisodeSampler(sizes, 3, 8, 8, seed=0)
    assert again.next_episode() == EpisodeSampler(sizes, 3, 8, 8, seed=0).next_episode()


def test_trainer_first_iteration_equals_hand_computation(tokenizer):
    """The whole trainer (sampling, fresh LoRA init, outer SGD) for one meta-iteration."""
    tasks = toy_tasks(2, per_task=6)
    config = TrainConfig(
        rank=4, alpha=8, dropout=0.0, budget_rule="matched_updates", steps=1, lr=0.2, seed=3, max_seq_len=64
    )
    options = MetaOptions(inner_steps=2, support_size=3, query_size=3, inner_lr=0.5, outer_optimizer="sgd")
    adapter = MetaLoraTrainer(options).fit(make_tiny_llama(), tokenizer, tasks, config)

    from metalora.training.lora import new_lora_model

    model = new_lora_model(make_tiny_llama(), config)
    theta = snapshot(model)
    encoded = [[encode_example(tokenizer, e, 64) for e in task.examples] for task in tasks]
    expected_grad = {name: torch.zeros_like(value) for name, value in theta.items()}
    for task, support, query in EpisodeSampler([6, 6], None, 3, 3, seed=3).next_episode():
        set_params(model, theta)
        sgd_by_mutation(model, collate([encoded[task][i] for i in support], tokenizer.pad_token_id), 2, 0.5)
        grads = query_grad_by_mutation(model, collate([encoded[task][i] for i in query], tokenizer.pad_token_id))
        for name, grad in grads.items():
            expected_grad[name] += grad / 2
    expected = get_peft_model_state_dict(model, state_dict={n: theta[n] - 0.2 * expected_grad[n] for n in theta})
    assert set(expected) == set(adapter.state)
    for name, value in expected.items():
        torch.testing.assert_close(adapter.state[name], value, atol=1e-6, rtol=1e-5)
    assert isinstance(adapter, LoraAdapter) and adapter.mergeable
    assert len(adapter.training_log) == 1 and adapter.training_log[0]["query_loss"] > 0


def test_same_seed_same_adapter(tokenizer):
    config = TrainConfig(rank=4, alpha=8, budget_rule="matched_updates", steps=2, lr=1e-2, seed=11, max_seq_len=64)
    options = MetaOptions(inner_steps=1, support_size=4, query_size=4)
    first = MetaLoraTrainer(options).fit(make_tiny_llama(), tokenizer, toy_tasks(per_task=8), config)
    second = MetaLoraTrainer(options).fit(make_tiny_llama(), tokenizer, toy_tasks(per_task=8), config)
    assert all(torch.equal(first.state[k], second.state[k]) for k in first.state)
    assert [r["loss"] for r in first.training_log] == [r["loss"] for r in second.training_log]


@pytest.mark.parametrize("variant", ["first_order", "phase2_only", "reptile", "phase1_only"])
def test_batched_inner_loop_equals_sequential(tokenizer, variant):
    """All tasks' inner loops in one vmapped pass give the sequential result (tasks of different
    lengths, so padding across tasks is exercised)."""
    from metalora.data.budgets import TaskBudget
    from metalora.data.example import Example

    long_task = [Example("long", f"a much longer prompt for item number {i} of this task: ", "xyz") for i in range(6)]
    tasks = toy_tasks(2, per_task=6) + [TaskBudget("long", long_task, [])]
    batches = []
    for task in tasks:
        encoded = [encode_example(tokenizer, example, 64) for example in task.examples]
        batches.append((collate(encoded[:3], tokenizer.pad_token_id), collate(encoded[3:], tokenizer.pad_token_id)))
    results = {}
    for inner_loop in ("sequential", "batched"):
        model = lora_model()
        options = MetaOptions(inner_steps=2, inner_lr=0.3, variant=variant, inner_loop=inner_loop)
        results[inner_loop] = meta_update_direction(model, shared_params(model), batches, options)
    (sequential, seq_stats), (batched, batch_stats) = results["sequential"], results["batched"]
    for name in sequential:
        torch.testing.assert_close(batched[name], sequential[name], atol=1e-6, rtol=1e-4)
    for key in ("support_loss", "query_loss"):
        if seq_stats[key] is None:
            assert batch_stats[key] is None
        else:
            assert batch_stats[key] == pytest.approx(seq_stats[key], rel=1e-5)


def test_second_order_refuses_the_batched_inner_loop():
    from metalora.errors import MlbenchError

    with pytest.raises(MlbenchError, match="variant second_order runs only with inner_loop=sequential"):
        MetaOptions(variant="second_order", inner_loop="batched").validate()


def unequal_episode(tokenizer, support=3, query=2):
    """Three tasks of different prompt and answer lengths, support and query sets of different sizes."""
    from metalora.data.budgets import TaskBudget
    from metalora.data.example import Example

    medium = [Example("medium", f"a longer prompt, item {i}: ", "yz" * (1 + i % 3)) for i in range(6)]
    long = [Example("long", f"a much longer prompt for item number {7**i} of this task: ", "xyz" * 4) for i in range(6)]
    tasks = toy_tasks(1, per_task=6) + [TaskBudget("medium", medium, []), TaskBudget("long", long, [])]
    batches = []
    for task in tasks:
        encoded = [encode_example(tokenizer, example, 96) for example in task.examples]
        batches.append(
            (collate(encoded[:support], tokenizer.pad_token_id), collate(encoded[support : support + query], tokenizer.pad_token_id))
        )
    return batches


@pytest.mark.parametrize("weighting", ["task", "token"])
@pytest.mark.parametrize("variant", ["first_order", "phase2_only", "reptile", "phase1_only"])
def test_stacked_inner_loop_equals_sequential(tokenizer, variant, weighting):
    """All tasks' inner steps as ordinary passes over every task's rows, each task's rows through
    its own adapter copy: the sequential directions and losses, with tasks of different lengths
    (padded to one width) and support and query sets of different sizes."""
    batches = unequal_episode(tokenizer)
    assert len({support["input_ids"].shape[1] for support, _ in batches}) == 3  # the padding is exercised
    assert all("segments" in pack_task_batches(sets) for sets in zip(*batches))  # and the packing
    results = {}
    for inner_loop in ("sequential", "stacked"):
        model = lora_model()
        model.train()  # dropout is 0: training mode changes nothing but is what the trainer uses
        options = MetaOptions(inner_steps=2, inner_lr=0.3, variant=variant, inner_loop=inner_loop)
        results[inner_loop] = meta_update_direction(model, shared_params(model), batches, options, weighting)
    (sequential, seq_stats), (stacked, stacked_stats) = results["sequential"], results["stacked"]
    for name in sequential:
        # float32 sums over other batch shapes (one element of 128 was 1.7e-7 apart on an AVX-512 CPU)
        torch.testing.assert_close(stacked[name], sequential[name], atol=1e-6, rtol=1e-5)
    for key in ("support_loss", "query_loss"):
        if seq_stats[key] is None:
            assert stacked_stats[key] is None and variant == "phase2_only"
        else:
            assert stacked_stats[key] == pytest.approx(seq_stats[key], rel=1e-6)
    # the directions are not all zero, so the comparison has teeth
    assert max(value.abs().max().item() for value in sequential.values()) > 1e-3


def test_stacked_inner_loop_leaves_the_model_as_it_was(tokenizer):
    """The per-task hooks come off and the layers' own adapter is back after the stacked pass."""
    model = lora_model()
    batch = unequal_episode(tokenizer)[0][0]
    before = batch_loss(model, batch)
    meta_update_direction(model, shared_params(model), unequal_episode(tokenizer), MetaOptions(inner_loop="stacked"))
    assert torch.equal(batch_loss(model, batch), before)
    assert not any(module._forward_hooks for module in model.modules())


def test_stacked_inner_loop_with_checkpointing_equals_without(tokenizer):
    """Activation checkpointing recomputes each layer in the backward pass with the stacked copies
    still in place: the same directions (bit for bit on CPU) and losses."""
    from metalora.training.recompute import activation_checkpointing

    batches = unequal_episode(tokenizer)
    options = MetaOptions(inner_steps=2, inner_lr=0.3, inner_loop="stacked")
    results = []
    for enabled in (False, True):
        model = lora_model()
        model.train()
        with activation_checkpointing(model, enabled):
            results.append(meta_update_direction(model, shared_params(model), batches, options))
    (plain, plain_stats), (recomputed, recomputed_stats) = results
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], atol=0, rtol=0)
    assert plain_stats == recomputed_stats
    MetaOptions(inner_loop="stacked").check_train(TrainConfig(gradient_checkpointing=True))  # not refused


def test_stacked_inner_loop_refuses_unequal_row_counts(tokenizer):
    batches = unequal_episode(tokenizer)
    batches[1] = (unequal_episode(tokenizer, support=2)[1][0], batches[1][1])
    with pytest.raises(ValueError, match=r"needs equally many rows per task, got \[2, 3\]"):
        model = lora_model()
        meta_update_direction(model, shared_params(model), batches, MetaOptions(inner_loop="stacked"))


def test_second_order_refuses_the_stacked_inner_loop():
    from metalora.errors import MlbenchError

    with pytest.raises(MlbenchError, match="variant second_order runs only with inner_loop=sequential"):
        MetaOptions(variant="second_order", inner_loop="stacked").validate()


def test_trainer_with_stacked_inner_loop_equals_sequential(tokenizer, monkeypatch):
    """The whole trainer (sampling, fresh LoRA init, outer AdamW, two meta-iterations) with the
    stacked inner loop gives the sequential adapter and losses. In float64: the outer AdamW divides
    each gradient element by its own magnitude, so float32 rounding in near-zero elements (the
    packed rows reduce in another order) reaches 1e-5 after two updates."""
    tasks = [
        TaskBudget(task.name, [Example(e.task, "x" * i + e.prompt, e.target) for i, e in enumerate(task.examples)], [])
        for task in toy_tasks(3, per_task=8)
    ]  # examples of unequal lengths, so the stacked passes are packed
    from metalora.methods import meta

    packed = []
    monkeypatch.setattr(meta, "pack_task_batches", lambda sets: packed.append(pack_task_batches(sets)) or packed[-1])
    config = TrainConfig(rank=4, alpha=8, dropout=0.0, budget_rule="matched_updates", steps=2, lr=0.05, seed=3, max_seq_len=64)
    adapters = {
        inner_loop: MetaLoraTrainer(
            MetaOptions(inner_steps=2, support_size=3, query_size=2, inner_lr=0.5, inner_loop=inner_loop)
        ).fit(make_tiny_llama(dtype=torch.float64), tokenizer, tasks, config)
        for inner_loop in ("sequential", "stacked")
    }
    assert len(packed) == 4 and all("segments" in batch for batch in packed)  # 2 iterations x (support, query)
    sequential, stacked = adapters["sequential"], adapters["stacked"]
    for name, value in sequential.state.items():
        torch.testing.assert_close(stacked.state[name], value, atol=1e-12, rtol=1e-10)
    for key in ("loss", "support_loss", "query_loss", "examples", "tokens"):
        assert [r[key] for r in stacked.training_log] == pytest.approx([r[key] for r in sequential.training_log], rel=1e-12)


def test_stacked_inner_loop_applies_dropout_and_is_seeded(tokenizer):
    """With dropout the stacked pass draws its own masks (one over all tasks' rows, so other draws
    than the sequential loop's): the same seed gives the same adapter, and dropout really acts."""
    tasks = toy_tasks(3, per_task=8)

    def train(dropout):
        config = TrainConfig(rank=4, alpha=8, dropout=dropout, budget_rule="matched_updates", steps=2, lr=0.05, seed=3, max_seq_len=64)
        options = MetaOptions(inner_steps=1, support_size=3, query_size=2, inner_lr=0.5, inner_loop="stacked")
        return MetaLoraTrainer(options).fit(make_tiny_llama(), tokenizer, tasks, config)

    first, second, without = train(0.3), train(0.3), train(0.0)
    assert all(torch.equal(first.state[name], second.state[name]) for name in first.state)
    assert not all(torch.allclose(first.state[name], without.state[name], atol=1e-6) for name in first.state)
