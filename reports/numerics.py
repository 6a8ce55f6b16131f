"""Evaluation numerics of the runs a leaderboard block ranks against each other.

In bfloat16 which forwards compute an answer changes its rounding, and so the answer at near-ties:
``--eval-shapes`` (stock HFLM's shapes or mlbench's faster ones), the evaluation batch size and the
rows that generate together (README, "Stock shapes by default"). A dtype is a numerics too, and so is
the rule by which a generation chunk ends and its texts are cut (``settings.generation_rule``,
``eval_tasks/generation_rules.py``), which changes texts in any dtype, and so is a GPU shared under
MPS (``mlbench sweep --mps``, recorded as ``env.cuda_mps_pipe``) by a run whose training did not run
deterministic kernels: measured, such runs' numbers differed from time-sliced ones, because the
training's attention backward sums with atomics in the order thread blocks finish, which other
processes' kernels change. With deterministic training (``cost.json`` ``training.deterministic_kernels``,
the default since 3fdfa6f) sweeps under MPS scored the same as time-sliced ones, run for run
(README, Scale-out), so such runs, and the base model's (no training), are not told apart. Runs
that a block (``reports.tables.MARK_GROUP``: model, profile, scenario, shots, evaluated items)
ranks against each other should share them; the report lists the blocks where they do not, with
which runs used what. In float32 the shapes give the same answers to float rounding, so blocks
evaluated in float32 alone are not listed for shapes, batch or rows, only for a dtype, a
generation rule or GPU sharing that differs. In half precision a LoRA evaluated unmerged
(``--eval-merge-lora off``, recorded in ``env.json``; lm-eval's ``peft=`` path) rounds differently
from one merged into the base weights (the default), so a trained run evaluated with it is named
too (HydraLoRA, whose heads never merge, is named as well: the flag is what is recorded).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from eval_tasks.generation_rules import STOCK_GENERATION_RULE
from reports.settings import Setting
from reports.tables import MARK_GROUP, setting_fields

HALF_PRECISION = ("bfloat16", "float16")
UNRECORDED_SHAPES = "fast (recorded before --eval-shapes existed)"
# Fast-backend results recorded before settings.generation_rule existed: stock shapes before f4bd08b,
# and fast shapes, cut each generated row at its own first stop string (eval_tasks/greedy.py), other
# texts in any dtype, so they are never ranked silently against runs whose rule is recorded. lm-eval's
# own backend always followed HF generate.
UNRECORDED_RULE = "not recorded"


@dataclass(frozen=True)
class Numerics:
    dtype: str
    backend: str
    shapes: str | None  # the fast backend's --eval-shapes; None for the stock backend
    batch_size: object
    decode_rows: object
    generation_rule: str  # how generation chunks end and texts are cut (settings.generation_rule)
    shared_gpu: str | None = None  # "MPS" when the run's worker shared its GPU under MPS; None otherwise
    lora_unmerged: bool = False  # a trained run evaluated with --eval-merge-lora off (other rounding in half precision)

    def describe(self, dtype_only: bool = False) -> str:
        # The generation rule and MPS change numbers in any dtype, so they are named even where
        # rounding is not.
        in_any_dtype = [f"generation: {self.generation_rule}"]
        if self.shared_gpu:
            in_any_dtype.append(f"GPU shared under {self.shared_gpu}")
        if dtype_only:
            return ", ".join([self.dtype, *in_any_dtype])
        parts = [self.dtype, f"backend {self.backend}"]
        if self.shapes is not None:
            parts.append(f"shapes {self.shapes}")
        parts.append(f"batch {self.batch_size}")
        if self.lora_unmerged:
            parts.append("--eval-merge-lora off")
        if self.decode_rows not in (None, self.batch_size):
            parts.append(f"{self.decode_rows} rows generating together")
        return ", ".join(parts + in_any_dtype)


def run_numerics(run) -> Numerics:
    """What a finished run's evaluation recorded about how its answers were computed."""
    settings = (run.results or {}).get("settings") or {}
    backend = str(settings.get("eval_backend") or "not recorded")
    shapes = settings.get("eval_shapes") or (UNRECORDED_SHAPES if backend == "fast" else None)
    dtype = str((run.env or {}).get("dtype") or run.config.get("dtype") or "not recorded")
    rule = settings.get("generation_rule") or (STOCK_GENERATION_RULE if backend == "hflm" else UNRECORDED_RULE)
    shared = "MPS" if _mps_changes_numbers(run) else None
    unmerged = (run.env or {}).get("eval_merge_lora") == "off" and run.config.get("method") != "base"
    return Numerics(dtype, backend, shapes, settings.get("batch_size"), settings.get("decode_rows"), rule, shared,
                    unmerged)


def _mps_changes_numbers(run) -> bool:
    """Whether the run shared its GPU under MPS with training that may have summed with atomics."""
    if not (run.env or {}).get("cuda_mps_pipe") or run.config.get("method") == "base":
        return False
    training = (run.cost or {}).get("training")
    return not (isinstance(training, dict) and training.get("deterministic_kernels") is True)


@dataclass(frozen=True)
class MixedBlock:
    block: str  # the block's model, profile, scenario, shots and evaluated items, as words
    numerics: tuple[tuple[str, tuple[str, ...]], ...]  # (numerics described, its runs' ids)


def mixed_numerics(settings: Sequence[Setting]) -> list[MixedBlock]:
    """The blocks whose runs were evaluated under more than one numerics (module docstring)."""
    blocks: dict[tuple, dict[Numerics, list[str]]] = defaultdict(lambda: defaultdict(list))
    for setting in settings:
        fields = setting_fields(setting)
        key = tuple(fields[name] for name in MARK_GROUP)
        for run in setting.runs:
            blocks[key][run_numerics(run)].append(run.run_id)
    mixed = []
    for key, found in blocks.items():
        dtypes = {numerics.dtype for numerics in found}
        dtype_only = not dtypes & set(HALF_PRECISION)
        described: dict[str, list[str]] = defaultdict(list)
        for numerics, runs in found.items():
            described[numerics.describe(dtype_only)] += runs
        if len(described) > 1:
            words = ", ".join(_word(name, value) for name, value in zip(MARK_GROUP, key, strict=True) if value)
            mixed.append(MixedBlock(words, tuple((text, tuple(sorted(runs))) for text, runs in sorted(described.items()))))
    return mixed


def _word(name: str, value) -> str:
    return f"{value} per task" if name == "shots" else str(value)
