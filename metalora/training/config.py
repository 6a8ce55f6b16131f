"""The training options every method shares (``TrainConfig``).

Method-specific options live in each method's own dataclass (its spec's ``options``). ``validate()``
refuses bad values with one line that says what is allowed, before any model or data is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from metalora.errors import MlbenchError
from metalora.options import option, require_choice, require_positive, require_range
from metalora.training.budget import BUDGET_RULES, RULE_KNOBS, BudgetPlan, UpdateShape, plan_budget
from metalora.training.determinism import DETERMINISTIC_CHOICES

LR_SCHEDULES = ("constant", "linear", "cosine")
# How target-token losses combine (metalora/training/weighting.py, which needs torch; the names
# live here so the report can read the defaults without it).
LOSS_WEIGHTINGS = ("task", "token")
# How supervised training runs its decoder passes on CUDA (metalora/training/graphed_decoder.py).
TRAIN_CUDA_GRAPH_CHOICES = ("auto", "off")
MIN_SEQ_LEN = 2  # one prompt token to condition on and one target token to learn


@dataclass(frozen=True)
class TrainConfig:
    """Options every method shares. ``lr`` is the (outer) optimizer's rate: beta for MeTA-LoRA."""

    rank: int = option(16, "LoRA rank.")
    alpha: float = option(32.0, "LoRA alpha (scaling alpha / rank).")
    dropout: float = option(0.05, "LoRA dropout.")
    # MLP projections, as in HydraLoRA's scripts and the MeTA-LoRA lab's related code (method.md).
    target_modules: tuple[str, ...] = option(("gate_proj", "up_proj", "down_proj"), "Comma-separated module names.")
    # How many updates a run gets (metalora/training/budget.py): the same example passes for every
    # method of a cell (matched_compute), the same number of updates (matched_updates) or the same
    # passes over the budgets (epochs). Each rule reads one knob; the run config sets the others to
    # None so that they neither enter the run id nor look as if they applied.
    budget_rule: str = option("matched_compute", "Training budget rule: " + " | ".join(BUDGET_RULES) + ".")
    compute_epochs: float | None = option(
        32.0, "matched_compute: example passes per budget example, the same for every method of a cell."
    )
    steps: int | None = option(100, "matched_updates: optimizer steps / meta-iterations.")
    epochs: float | None = option(1.0, "epochs: passes over every task's budget (at least 1).")
    loss_weighting: str = option(
        "task", "Loss weighting: task (mean per task, then over tasks) | token (mean over all target tokens)."
    )
    lr: float = option(2e-4, "Learning rate; the outer rate beta for metalora.")
    weight_decay: float = option(0.0, "AdamW weight decay.")
    lr_schedule: str = option("constant", "Learning-rate schedule: " + " | ".join(LR_SCHEDULES) + ".")
    warmup_steps: int = option(0, "Warm-up steps.")
    batch_size: int = option(8, "Training batch size (supervised methods).")
    max_seq_len: int = option(512, "Longest training sequence in tokens.")
    seed: int = option(0, "Seed for budgets, initialisation and sampling.")
    # Recomputes what it drops, so no loss or gradient changes (metalora/training/recompute.py): it
    # is recorded in config.json but left out of the run id, like the device and the batch size
    # of evaluation, so a run trained with it and one trained without are the same run.
    gradient_checkpointing: bool = option(
        False, "Recompute each layer's activations in the backward pass: less memory, about a third more compute."
    )
    # The same kernels on the same shapes replayed (metalora/training/graphed_decoder.py), so, like
    # checkpointing, recorded and left out of the run id. On the H200 the adapters came out bit for bit
    # the same with and without, and a full-protocol run's every score (bench/train_graphs.py; README).
    train_cuda_graphs: str = option(
        "auto", "auto (supervised methods on CUDA with SDPA attention: each padded batch shape's decoder forward "
                "and backward replayed as a CUDA graph from its second occurrence on; the same adapter) | off."
    )

    # Kernels that add in a fixed order (metalora/training/determinism.py): the same adapter even when
    # processes share the GPU. Recorded and left out of the run id: it picks how a sum is ordered, not
    # what the run is.
    deterministic_training: str = option(
        "on", "on (on CUDA, PyTorch's deterministic kernels while training: a run trains the same adapter bit for "
              "bit, also when sweep workers share the GPU) | off (the faster atomics; not reproducible bit for bit)."
    )

    def validate(self) -> TrainConfig:
        require_positive("rank", self.rank)
        require_positive("alpha", self.alpha, integer=False)
        require_range("dropout", self.dropout, 0.0, 0.99)
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise MlbenchError("target_modules must list at least one module name, e.g. gate_proj,up_proj,down_proj")
        require_choice("budget_rule", self.budget_rule, BUDGET_RULES)
        knob = RULE_KNOBS[self.budget_rule]
        if getattr(self, knob) is None:
            raise MlbenchError(f"budget_rule {self.budget_rule} needs {knob}; give it a value")
        if self.steps is not None:
            require_positive("steps", self.steps)
        for name in ("compute_epochs", "epochs"):
            if getattr(self, name) is not None:
                require_positive(name, getattr(self, name), integer=False)
        require_choice("loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        require_positive("lr", self.lr, integer=False)
        require_range("weight_decay", self.weight_decay, 0.0, 1.0)
        require_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise MlbenchError(f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        require_choice("train_cuda_graphs", self.train_cuda_graphs, TRAIN_CUDA_GRAPH_CHOICES)
        require_choice("deterministic_training", self.deterministic_training, DETERMINISTIC_CHOICES)
        require_positive("batch_size", self.batch_size)
        require_positive("max_seq_len", self.max_seq_len)
        if self.max_seq_len < MIN_SEQ_LEN:
            raise MlbenchError(
                f"max_seq_len must be at least {MIN_SEQ_LEN} (a prompt token and a target token), got {self.max_seq_len}"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise MlbenchError(f"seed must be a non-negative integer, got {self.seed!r}")
        return self

    def plan_budget(self, shape: UpdateShape, sizes: Sequence[int], method: str = "this method") -> BudgetPlan:
        """The run's updates under ``budget_rule`` for a method whose update is ``shape`` (refuses a
        budget that would leave an example unseen)."""
        return plan_budget(
            self.budget_rule, shape, sizes, steps=self.steps, epochs=self.epochs,
            compute_epochs=self.compute_epochs, method=method,
        )
