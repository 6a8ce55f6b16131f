"""Balanced sampling of training examples, the same scheme for every method.

Tasks are visited in rounds, each round one shuffled permutation of the tasks, so every task gets
the same number of visits (equal task weight, whatever each task's budget size) up to one round.
Each task serves its examples from its own shuffled cycle, so ``N`` draws from a task of ``N``
examples see each of them exactly once. Together they give the coverage guarantee that
``metalora.training.budget`` counts with. The state is plain data, saved in checkpoints, and the
samplers count what they drew per task (for ``min_epochs`` in ``cost.json``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence


class BalancedOrder:
    """Task rounds and per-task example cycles from one seeded generator."""

    def __init__(self, task_sizes: Sequence[int], seed: int):
        self.task_sizes = list(task_sizes)
        self.rng = random.Random(seed)
        self.rounds: list[int] = []  # pending task visits, next first
        self.cycles: list[list[int]] = [[] for _ in self.task_sizes]  # pending example indices, next first
        self.draws = [0] * len(self.task_sizes)

    def _shuffled(self, count: int) -> list[int]:
        order = list(range(count))
        self.rng.shuffle(order)
        return order

    def tasks(self, count: int, *, distinct: bool) -> list[int]:
        """The next ``count`` task visits. With ``distinct`` none repeats: a task that would repeat
        (only possible across a round boundary) is deferred to the next call, keeping its round."""
        picked: list[int] = []
        deferred: list[int] = []
        while len(picked) < count:
            if not self.rounds:
                self.rounds = self._shuffled(len(self.task_sizes))
            task = self.rounds.pop(0)
            (deferred if distinct and task in picked else picked).append(task)
        self.rounds = deferred + self.rounds
        return picked

    def examples(self, task: int, count: int) -> list[int]:
        """The next ``count`` distinct example indices of ``task`` (``count`` <= its size), taken the
        same way: one that would repeat across the end of a cycle waits for the next call."""
        picked: list[int] = []
        deferred: list[int] = []
        while len(picked) < count:
            if not self.cycles[task]:
                self.cycles[task] = self._shuffled(self.task_sizes[task])
            index = self.cycles[task].pop(0)
            (deferred if index in picked else picked).append(index)
        self.cycles[task] = deferred + self.cycles[task]
        self.draws[task] += count
        return picked

    def epochs(self) -> list[float]:
        """Draws per task over its budget size: the passes over each task's budget so far."""
        return [draws / size for draws, size in zip(self.draws, self.task_sizes)]

    def state_dict(self) -> dict:
        return {
            "rng": self.rng.getstate(),
            "rounds": list(self.rounds),
            "cycles": [list(cycle) for cycle in self.cycles],
            "draws": list(self.draws),
        }

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        self.rounds = list(state["rounds"])
        self.cycles = [list(cycle) for cycle in state["cycles"]]
        self.draws = list(state["draws"])


class MixedTaskSampler(BalancedOrder):
    """Batches for the supervised methods: each slot is the next task visit and that task's next
    example, so batches mix the tasks with equal weight."""

    def next_batch(self, batch_size: int) -> list[tuple[int, int]]:
        """``batch_size`` pairs of (task index, example index)."""
        return [(task, self.examples(task, 1)[0]) for task in self.tasks(batch_size, distinct=False)]


class EpisodeSampler(BalancedOrder):
    """MeTA-LoRA's meta-iterations: ``tasks_per_iteration`` distinct tasks, and per task disjoint
    support and query sets (``support_size`` and ``query_size`` examples)."""

    def __init__(self, task_sizes: Sequence[int], tasks_per_iteration: int | None, support_size: int,
                 query_size: int, seed: int):
        super().__init__(task_sizes, seed)
        self.per_iteration = tasks_per_iteration or len(self.task_sizes)
        self.support_size, self.query_size = support_size, query_size

    def next_episode(self) -> list[tuple[int, list[int], list[int]]]:
        episode = []
        for task in sorted(self.tasks(self.per_iteration, distinct=True)):
            picks = self.examples(task, self.support_size + self.query_size)
            episode.append((task, picks[: self.support_size], picks[self.support_size :]))
        return episode
