"""Per-task data budgets: N examples per task drawn with a seed, or the capped full pool."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from metalora.data.example import Example
from metalora.data.registry import TaskSplit, get_task
from metalora.data.root import DataRoot
from metalora.errors import MlbenchError

MIN_SHOTS, MAX_SHOTS = 10, 100
DEFAULT_FULL_CAP = 1000


def parse_shots(value: str | int) -> int | str:
    """``10``..``100`` or ``"full"``; anything else is refused with the allowed values."""
    if isinstance(value, str) and value.strip().lower() == "full":
        return "full"
    try:
        shots = int(value)
    except (TypeError, ValueError):
        shots = None
    if shots is None or not MIN_SHOTS <= shots <= MAX_SHOTS or str(value).strip() != str(shots):
        raise MlbenchError(f"shots must be an integer from {MIN_SHOTS} to {MAX_SHOTS} or 'full', got {value!r}")
    return shots


def task_seed(seed: int, task: str) -> int:
    """A per-task seed, so adding or removing a task never changes another task's draw."""
    return int(hashlib.sha256(f"{seed}:{task}".encode()).hexdigest()[:16], 16)


@dataclass(frozen=True)
class TaskBudget:
    """The examples one task contributes to training, and the held-out items it must never see."""

    name: str
    examples: list[Example]
    held_out: list[Example]


def draw_budget(
    name: str, pool: list[Example], shots: int | str, seed: int, full_cap: int = DEFAULT_FULL_CAP
) -> list[Example]:
    rng = random.Random(task_seed(seed, name))
    if not pool:
        raise MlbenchError(
            f"task {name} has no training items (its data holds none outside the held-out items); "
            "leave it out of --tasks or restore its data file"
        )
    if shots == "full":
        count = min(len(pool), full_cap)
    else:
        if shots > len(pool):
            raise MlbenchError(
                f"task {name} has {len(pool)} training items, fewer than --shots {shots}; "
                f"use at most {len(pool)} or another task"
            )
        count = shots
    return [pool[index] for index in sorted(rng.sample(range(len(pool)), count))]


def load_budgets(
    root: DataRoot,
    tasks: Sequence[str],
    shots: int | str,
    seed: int,
    full_cap: int = DEFAULT_FULL_CAP,
    load_split: Callable[[str], TaskSplit] | None = None,
) -> list[TaskBudget]:
    """Each task's budget. ``load_split`` (task name -> its split under ``root``) lets a sweep read
    every task's files once for all its runs instead of once per run."""
    if full_cap < 1:
        raise MlbenchError(f"full_cap must be a positive integer, got {full_cap}")
    budgets = []
    for name in tasks:
        split = load_split(name) if load_split else get_task(name).load(root)
        budgets.append(TaskBudget(name, draw_budget(name, split.train, shots, seed, full_cap), split.held_out))
    return budgets
