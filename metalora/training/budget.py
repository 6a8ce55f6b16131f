"""Training budgets: how many updates a run gets under the sweep's budget rule, and the proof that
every method sees every budget example at least once.

A *pass* is one example through one forward and one backward pass. What one update (an optimizer
step, or a MeTA-LoRA meta-iteration) consumes is the method's ``UpdateShape``:

- LoRA, HydraLoRA, DoRA: ``batch_size`` passes; each batch slot is one task visit that draws one
  example;
- MeTA-LoRA: per task of the iteration, ``inner_steps`` passes over its ``support_size`` examples
  plus one over its ``query_size`` examples, i.e. ``tasks x (k x n_s + n_q)`` passes; each task
  visit draws ``n_s + n_q`` examples. ``phase2_only`` (no inner loop) passes each drawn example
  once: ``tasks x (n_s + n_q)``.

Rules (``budget_rule``):

- ``matched_compute``: the same number of passes P for every method of a cell, P =
  ceil(``compute_epochs`` x the cell's budget examples summed over tasks); a method gets
  ceil(P / its passes per update) updates, so it does P passes plus less than one update more;
- ``matched_updates``: ``steps`` updates for every method (the passes then differ by method);
- ``epochs``: the fewest updates that let every task be visited for ``epochs`` passes over its
  budget (the largest task sets the count; tasks are mixed with equal weight).

Under every rule a run that would leave any budget example unseen is refused before any model is
loaded. The guarantee is counted from the samplers' balanced order (``metalora.training.sampling``):
tasks are visited in rounds (one shuffled permutation of the tasks per round) and each task
serves its examples from its own shuffled cycle, so ``r`` complete rounds draw at least
``r x draws`` examples of every task, covering a task of ``N`` examples once ``r x draws >= N``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from metalora.errors import MlbenchError

BUDGET_RULES = ("matched_compute", "matched_updates", "epochs")
DEFAULT_RULE = "matched_compute"
# Which TrainConfig knob each rule reads; the others do not apply to it.
RULE_KNOBS = {"matched_compute": "compute_epochs", "matched_updates": "steps", "epochs": "epochs"}
KNOB_RULES = {knob: rule for rule, knob in RULE_KNOBS.items()}


def resolve_budget_options(explicit: Mapping[str, object], defaults: Mapping[str, object]) -> dict:
    """The budget rule and its one knob from flat options; the other knobs become None, so they
    neither change the run id nor look as if they applied.

    ``explicit`` are the options given (flags, sweep keys), ``defaults`` a profile's. The rule is
    the one given, else the rule of the one knob given (``--steps 30`` means matched_updates),
    else the profile's, else matched_compute. A knob given for another rule is refused.
    """
    given = [knob for knob in KNOB_RULES if explicit.get(knob) is not None]
    rule = explicit.get("budget_rule")
    if rule is None:
        if len(given) > 1:
            raise MlbenchError(
                f"{' and '.join(given)} belong to different budget rules; give budget_rule "
                f"({', '.join(BUDGET_RULES)}) and only its knob"
            )
        rule = KNOB_RULES[given[0]] if given else defaults.get("budget_rule", DEFAULT_RULE)
    if rule not in BUDGET_RULES:
        raise MlbenchError(f"budget_rule must be one of {', '.join(BUDGET_RULES)}, got {rule!r}")
    knob = RULE_KNOBS[rule]
    foreign = [name for name in given if name != knob]
    if foreign:
        raise MlbenchError(f"{foreign[0]} does not apply under budget_rule {rule}, which reads {knob} only")
    resolved = {"budget_rule": rule, **{name: None for name in KNOB_RULES}}
    value = explicit.get(knob, defaults.get(knob))
    if value is None:
        del resolved[knob]  # the TrainConfig default
    elif knob != "steps" and isinstance(value, int) and not isinstance(value, bool):
        resolved[knob] = float(value)  # "4" and "4.0" passes per example are one run, one run id
    else:
        resolved[knob] = value
    return resolved


@dataclass(frozen=True)
class UpdateShape:
    """What one update of a method consumes."""

    passes: int  # examples through forward + backward per update
    visits: int  # task visits per update (batch slots; tasks per meta-iteration)
    draws: int  # examples drawn from a task per visit
    distinct: bool = False  # the visits of one update are distinct tasks (MeTA-LoRA's episodes)

    @classmethod
    def supervised(cls, batch_size: int) -> UpdateShape:
        return cls(passes=batch_size, visits=batch_size, draws=1)


def guaranteed_visits(updates: int, shape: UpdateShape, num_tasks: int) -> int:
    """The fewest visits any task can have had after ``updates`` updates.

    Visits come in rounds of one shuffled permutation of the tasks. Batch slots take them in
    order, so ``updates x visits`` slots hold ``floor(slots / tasks)`` complete rounds. Episodes
    need distinct tasks; where an episode size does not divide the task count, a task that would
    repeat within an episode is deferred to the next one, so up to ``visits - 1`` visits of the
    consumed prefix may still be pending.
    """
    taken = updates * shape.visits
    if shape.distinct and num_tasks % shape.visits:
        taken -= shape.visits - 1
    return max(0, taken) // num_tasks


def guaranteed_min_epochs(updates: int, shape: UpdateShape, sizes: Sequence[int]) -> float:
    """The fewest passes over any task's budget that the balanced samplers guarantee."""
    return guaranteed_visits(updates, shape, len(sizes)) * shape.draws / max(sizes)


def updates_for_epochs(epochs: float, shape: UpdateShape, sizes: Sequence[int]) -> int:
    """The fewest updates that guarantee ``epochs`` passes over every task's budget."""
    visits = math.ceil(epochs * max(sizes) / shape.draws)
    updates = max(1, math.ceil(visits * len(sizes) / shape.visits))
    while guaranteed_visits(updates, shape, len(sizes)) < visits:  # the deferral slack, at most a few
        updates += 1
    return updates


def matched_passes(compute_epochs: float, sizes: Sequence[int]) -> int:
    """The cell's pass budget P under ``matched_compute``: the same for every method of the cell."""
    return max(1, math.ceil(compute_epochs * sum(sizes)))


@dataclass(frozen=True)
class BudgetPlan:
    rule: str
    updates: int  # optimizer steps / meta-iterations
    passes: int  # example passes the run will do: updates x passes per update
    target_passes: int | None  # P under matched_compute, else None
    min_epochs: float  # guaranteed passes over the largest task's budget (>= 1)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def plan_budget(
    rule: str,
    shape: UpdateShape,
    sizes: Sequence[int],
    *,
    steps: int | None = None,
    epochs: float | None = None,
    compute_epochs: float | None = None,
    method: str = "this method",
) -> BudgetPlan:
    """The run's number of updates under ``rule``; refuses a run that would leave examples unseen."""
    if rule not in BUDGET_RULES:
        raise MlbenchError(f"budget_rule must be one of {', '.join(BUDGET_RULES)}, got {rule!r}")
    if not sizes or min(sizes) < 1:
        raise MlbenchError("every task needs at least one budget example")
    target = None
    if rule == "matched_compute":
        target = matched_passes(compute_epochs, sizes)
        updates = max(1, math.ceil(target / shape.passes))
    elif rule == "matched_updates":
        updates = steps
    else:
        if epochs < 1:
            raise MlbenchError(f"epochs must be at least 1 so that every example is seen, got {epochs!r}")
        updates = updates_for_epochs(epochs, shape, sizes)
    covered = guaranteed_min_epochs(updates, shape, sizes)
    if covered < 1:
        needed = updates_for_epochs(1, shape, sizes)
        fix = {
            "matched_compute": f"raise compute_epochs to at least {needed * shape.passes / sum(sizes):.3g}",
            "matched_updates": f"raise steps to at least {needed}",
        }[rule]
        raise MlbenchError(
            f"under budget_rule={rule} {method} gets {updates} updates of {shape.passes} example passes, "
            f"too few to see every one of the {max(sizes)} examples of its largest task at least once "
            f"(it needs {needed} updates); {fix}"
        )
    return BudgetPlan(rule, updates, updates * shape.passes, target, covered)


def training_cost(
    rule: str, log: Sequence[dict], epochs_per_task: Sequence[float], trainable_parameters: int,
    deterministic_kernels: bool | None = None,
) -> dict:
    """``cost.json``'s "training" record, counted from what the run really did: the step log
    (restored with a checkpoint, so a resumed run counts its first part too) and the sampler's
    draws per task. ``deterministic_kernels``: what ``metalora.training.determinism`` yielded for
    the fit, recorded on CUDA only (None on a CPU, whose kernels always are)."""
    record = {
        "budget_rule": rule,
        "outer_updates": len(log),
        "example_passes": sum(record["examples"] for record in log),
        "tokens": sum(record["tokens"] for record in log),
        "trainable_parameters": trainable_parameters,
        "min_epochs": min(epochs_per_task),
    }
    if deterministic_kernels is not None:
        record["deterministic_kernels"] = deterministic_kernels
    return record
