"""Budget rules, the balanced samplers' coverage guarantee, and the loss weighting."""

import pytest
import torch

from metalora.errors import MlbenchError
from metalora.training.budget import (
    UpdateShape,
    guaranteed_visits,
    matched_passes,
    plan_budget,
    updates_for_epochs,
)
from metalora.training.sampling import EpisodeSampler, MixedTaskSampler
from metalora.training.weighting import task_weights, weighted_lm_loss

LORA = UpdateShape.supervised(8)
# MeTA-LoRA defaults on five tasks: 5 x (3 x 8 + 8) passes, 8 + 8 examples drawn per task visit
META = UpdateShape(passes=5 * (3 * 8 + 8), visits=5, draws=16, distinct=True)
PHASE2 = UpdateShape(passes=5 * 16, visits=5, draws=16, distinct=True)


def test_matched_compute_at_fifty_shots():
    sizes = [50] * 5
    assert matched_passes(32, sizes) == 8000
    lora = plan_budget("matched_compute", LORA, sizes, compute_epochs=32)
    meta = plan_budget("matched_compute", META, sizes, compute_epochs=32)
    phase2 = plan_budget("matched_compute", PHASE2, sizes, compute_epochs=32)
    assert (lora.updates, lora.passes) == (1000, 8000)
    assert (meta.updates, meta.passes) == (50, 8000)
    assert (phase2.updates, phase2.passes) == (100, 8000)
    assert lora.min_epochs == 32.0 and meta.min_epochs == 16.0
    # not a multiple: every method does P passes plus less than one of its own updates
    odd = [plan_budget("matched_compute", shape, [37] * 5, compute_epochs=7.3) for shape in (LORA, META)]
    target = matched_passes(7.3, [37] * 5)
    assert target == 1351
    for plan, shape in zip(odd, (LORA, META)):
        assert target <= plan.passes < target + shape.passes


def test_every_rule_refuses_a_run_that_leaves_examples_unseen():
    with pytest.raises(MlbenchError, match=r"matched_updates lora gets 100 updates .* raise steps to at least 625"):
        plan_budget("matched_updates", LORA, [1000] * 5, steps=100, method="lora")
    # MeTA-LoRA at k = 3 needs two passes per example drawn: compute_epochs 1 is too little
    with pytest.raises(MlbenchError, match=r"raise compute_epochs to at least 2.56"):
        plan_budget("matched_compute", META, [50] * 5, compute_epochs=1)
    with pytest.raises(MlbenchError, match="epochs must be at least 1"):
        plan_budget("epochs", LORA, [50] * 5, epochs=0.5)
    assert plan_budget("matched_updates", LORA, [50] * 5, steps=100).min_epochs == 3.2


def test_epochs_rule_covers_the_largest_task():
    sizes = [1000, 412, 1000, 733, 1000]  # full data: capped pools of different sizes
    plan = plan_budget("epochs", LORA, sizes, epochs=1)
    assert plan.updates == 625 and plan.min_epochs == 1.0
    assert plan_budget("epochs", META, [50] * 5, epochs=2).updates == 7  # ceil(100 / 16)


def test_guarantee_with_episodes_that_do_not_divide_the_tasks():
    shape = UpdateShape(passes=3, visits=3, draws=1, distinct=True)
    assert guaranteed_visits(5, shape, 5) == 2  # 15 visits, minus 2 possibly deferred: 13 // 5
    assert updates_for_epochs(1, shape, [4] * 5) == 8


@pytest.mark.parametrize("sizes", [[5, 5, 5], [7, 3, 11, 4, 9]])
@pytest.mark.parametrize("batch", [1, 4, 7])
def test_supervised_sampler_meets_the_guarantee(sizes, batch):
    shape = UpdateShape.supervised(batch)
    updates = updates_for_epochs(1, shape, sizes)
    sampler = MixedTaskSampler(sizes, seed=3)
    seen = [set() for _ in sizes]
    for _ in range(updates):
        for task, index in sampler.next_batch(batch):
            seen[task].add(index)
    assert seen == [set(range(size)) for size in sizes]
    assert min(sampler.epochs()) >= 1
    assert sum(sampler.draws) == updates * batch
    # one fewer update would not be guaranteed: the count is tight, not padded
    assert guaranteed_visits(updates - 1, shape, len(sizes)) < max(sizes)


@pytest.mark.parametrize(("per_iteration", "sizes"), [(None, [16, 20, 50]), (3, [16, 20, 50, 30, 17]), (2, [9, 9, 9, 9])])
def test_episode_sampler_meets_the_guarantee(per_iteration, sizes):
    count = per_iteration or len(sizes)
    shape = UpdateShape(passes=1, visits=count, draws=8, distinct=True)
    updates = updates_for_epochs(1, shape, sizes)
    sampler = EpisodeSampler(sizes, per_iteration, 3, 5, seed=1)
    seen = [set() for _ in sizes]
    for _ in range(updates):
        episode = sampler.next_episode()
        assert len({task for task, _, _ in episode}) == count
        for task, support, query in episode:
            assert len(support) == 3 and len(query) == 5 and not set(support) & set(query)
            seen[task] |= set(support) | set(query)
    assert seen == [set(range(size)) for size in sizes]


def test_sampler_state_round_trips():
    first = EpisodeSampler([9, 12, 10], 2, 4, 4, seed=5)
    for _ in range(3):
        first.next_episode()
    second = EpisodeSampler([9, 12, 10], 2, 4, 4, seed=0)
    second.load_state_dict(first.state_dict())
    assert [first.next_episode() for _ in range(4)] == [second.next_episode() for _ in range(4)]
    assert first.draws == second.draws and sum(first.draws) == 7 * 2 * 8


def test_task_weighting_ignores_answer_length_and_token_weighting_does_not():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=generator)
    labels = torch.full((3, 6), -100)
    labels[0, 1:3] = torch.tensor([4, 5])  # task 7: two target tokens
    labels[1, 1:6] = torch.tensor([1, 2, 3, 4, 5])  # task 9: five
    labels[2, 4:6] = torch.tensor([6, 7])  # task 7 again: two
    tasks = torch.tensor([7, 9, 7])

    def mean_ce(rows):
        logit = logits[rows, :-1].reshape(-1, 11)
        return torch.nn.functional.cross_entropy(logit, labels[rows, 1:].reshape(-1), ignore_index=-100)

    by_task = weighted_lm_loss(logits, labels, tasks, "task")
    torch.testing.assert_close(by_task, (mean_ce([0, 2]) + mean_ce([1])) / 2)
    by_token = weighted_lm_loss(logits, labels, tasks, "token")
    torch.testing.assert_close(by_token, mean_ce([0, 1, 2]))
    assert task_weights(torch.tensor([4, 5]), "task").tolist() == [0.5, 0.5]
    assert task_weights(torch.tensor([40, 5]), "task").tolist() == [0.5, 0.5]
    assert task_weights(torch.tensor([4, 5, 0]), "token").tolist() == pytest.approx([4 / 9, 5 / 9, 0])
    assert task_weights(torch.tensor([40, 5, 0]), "token").tolist() == pytest.approx([40 / 45, 5 / 45, 0])


def test_the_rule_comes_from_what_was_given():
    from metalora.training.budget import resolve_budget_options

    profile = {"budget_rule": "epochs", "epochs": 1, "compute_epochs": 1}
    assert resolve_budget_options({}, {}) == {"budget_rule": "matched_compute", "steps": None, "epochs": None}
    assert resolve_budget_options({"steps": 30}, profile) == {
        "budget_rule": "matched_updates", "steps": 30, "epochs": None, "compute_epochs": None
    }
    assert resolve_budget_options({}, profile) == {
        "budget_rule": "epochs", "steps": None, "epochs": 1, "compute_epochs": None
    }
    assert resolve_budget_options({"budget_rule": "matched_compute"}, profile) == {
        "budget_rule": "matched_compute", "steps": None, "epochs": None, "compute_epochs": 1
    }
    with pytest.raises(MlbenchError, match="steps does not apply under budget_rule matched_compute, which reads compute_epochs only"):
        resolve_budget_options({"budget_rule": "matched_compute", "steps": 30}, {})
    with pytest.raises(MlbenchError, match="steps and epochs belong to different budget rules"):
        resolve_budget_options({"steps": 30, "epochs": 2}, {})
    with pytest.raises(MlbenchError, match="budget_rule must be one of matched_compute, matched_updates, epochs, got 'flops'"):
        resolve_budget_options({"budget_rule": "flops"}, {})
