"""From a training request to a trained adapter, with every check done before any work.

``plan_training`` validates the method, its options, the shared config, the scenario and its
tasks, the shots, and each task's budget (data files are read, nothing is trained, no model is
loaded); only then does ``execute_training`` load the model and fit. A bad request fails in
seconds with one line instead of after a model load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from metalora.adapters import Adapter
from metalora.config import TrainConfig
from metalora.data.budgets import DEFAULT_FULL_CAP, TaskBudget, load_budgets, parse_shots
from metalora.data.root import DataRoot, resolve_data_root
from metalora.data.scenarios import scenario_tasks
from metalora.errors import MlbenchError
from metalora.models import DEFAULT_MODEL, MODEL_ALIASES, LoadedModel, load_model
from metalora.trainer import StepCallback, Trainer, make_trainer


@dataclass(frozen=True)
class TrainingRequest:
    method: str = "metalora"
    model: str = DEFAULT_MODEL
    scenario: str = "multitask"
    tasks: tuple[str, ...] = ()
    held_out_languages: tuple[str, ...] = ()
    shots: int | str = 50
    full_cap: int = DEFAULT_FULL_CAP
    data_root: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    method_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingPlan:
    request: TrainingRequest
    trainer: Trainer
    root: DataRoot
    task_names: tuple[str, ...]
    budgets: list[TaskBudget]
    shots: int | str


def check_model_name(name: str) -> None:
    """Cheap early check; full resolution (and any GGUF conversion) happens at load time."""
    if not name or not name.strip():
        raise MlbenchError(f"model name is empty; pass a hub id, a local folder, a .gguf file or {', '.join(MODEL_ALIASES)}")


def plan_training(request: TrainingRequest) -> TrainingPlan:
    trainer = make_trainer(request.method, request.method_options)
    request.train.validate()
    shots = parse_shots(request.shots)
    check_model_name(request.model)
    task_names = scenario_tasks(request.scenario, request.tasks, request.held_out_languages)
    root = resolve_data_root(request.data_root)
    budgets = load_budgets(root, task_names, shots, request.train.seed, request.full_cap)
    trainer.validate(request.train, budgets)
    return TrainingPlan(request, trainer, root, task_names, budgets, shots)


def execute_training(
    plan: TrainingPlan,
    loaded: LoadedModel | None = None,
    *,
    device: str | None = None,
    dtype: str | None = None,
    on_step: StepCallback | None = None,
) -> tuple[Adapter, LoadedModel]:
    loaded = loaded or load_model(plan.request.model, device=device, dtype=dtype)
    adapter = plan.trainer.fit(loaded.model, loaded.tokenizer, plan.budgets, plan.request.train, on_step)
    return adapter, loaded


def budget_summary(budgets: Sequence[TaskBudget]) -> dict[str, int]:
    return {budget.name: len(budget.examples) for budget in budgets}
