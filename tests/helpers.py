"""Small builders shared by the core tests."""

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
