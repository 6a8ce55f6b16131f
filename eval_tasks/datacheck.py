"""Reading benchmark data ahead of evaluation: so a malformed file fails before training, not after.

Two uses:

- ``check_benchmark_data`` parses every file a run's benchmarks will read, with the same parsers the
  task loaders use (``metalora.data.*``), in a fraction of a second and without ``datasets``. A run
  calls it before the model loads, so a broken MMLU CSV costs nothing instead of the training.
- ``evaluated_item_counts`` calls each task's own ``custom_dataset`` loader (the function its YAML
  names) and counts the ``test`` split: exactly the items lm-eval would evaluate. ``mlbench data
  check`` prints these, read from the data, beside the official counts of the registry.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType

from eval_tasks.dataroot import task_metadata
from eval_tasks.registry import EVAL_TASKS_DIR, BenchmarkSpec, get_benchmark
from metalora.data.bbh import bbh_items, bbh_prompt
from metalora.data.mgsm import mgsm_rows
from metalora.data.mmlu import mmlu_rows
from metalora.data.registry import get_task
from metalora.data.root import DataRoot
from metalora.data.xcopa import xcopa_rows
from metalora.data.xwinograd import xwinograd_rows

# Per task-YAML folder: parse one subtask's files (called with the spec's dataset kwargs). A folder
# without an entry is checked through its lm-eval loader instead (slower, same errors).
_PARSERS: Mapping[str, Callable[..., object]] = MappingProxyType(
    {
        "bbh": lambda root, task, **_: (bbh_items(root, task), bbh_prompt(root, task)),
        "mmlu": lambda root, subject, **_: mmlu_rows(root, subject),
        "xcopa": lambda root, language, **_: xcopa_rows(root, language, "test"),
        "xwinograd": lambda root, language, **_: xwinograd_rows(root, language),
        "mgsm": lambda root, language, **_: mgsm_rows(root, language),
        "heldout": lambda root, task, **_: get_task(task).load(root),
    }
)
_CUSTOM_DATASET = re.compile(r"^custom_dataset:\s*!function\s+(\S+)\s*$", re.MULTILINE)
_INCLUDE = re.compile(r"^include:\s*(\S+)\s*$", re.MULTILINE)


def check_benchmark_data(
    benchmarks: Iterable[str], root: DataRoot, subtasks: Mapping[str, Sequence[str]] | None = None
) -> None:
    """Parse every local file the benchmarks read (``subtasks``: a run's selection, e.g. ``heldout``
    on its training tasks); a malformed one raises ``MlbenchError`` naming it. Hub data is not
    checked here (it is fetched by the evaluation itself)."""
    if root.is_hub:
        return
    for name in benchmarks:
        spec = get_benchmark(name)
        parser = _PARSERS.get(spec.folder)
        for subtask in (subtasks or {}).get(name, spec.subtasks):
            if parser is not None:
                parser(root, **spec.dataset_kwargs(subtask))
            else:
                benchmark_loader(spec)(**spec.dataset_kwargs(subtask), **task_metadata(root))


def evaluated_item_counts(spec: BenchmarkSpec, root: DataRoot) -> dict[str, int]:
    """Items per subtask that lm-eval evaluates without a limit, counted from the data."""
    loader = benchmark_loader(spec)
    return {
        subtask: len(loader(**spec.dataset_kwargs(subtask), **task_metadata(root))["test"])
        for subtask in spec.subtasks
    }


def benchmark_loader(spec: BenchmarkSpec) -> Callable:
    """The ``custom_dataset`` function the benchmark's template names (following ``include:``)."""
    path = EVAL_TASKS_DIR / spec.folder / spec.template
    for _ in range(8):  # templates include at most one or two others
        text = path.read_text(encoding="utf-8")
        found = _CUSTOM_DATASET.search(text)
        if found:
            module, _, function = found.group(1).rpartition(".")
            return getattr(importlib.import_module(module), function)
        included = _INCLUDE.search(text)
        if not included:
            break
        path = path.parent / included.group(1)
    raise LookupError(f"benchmark {spec.name}: its template {spec.template} names no custom_dataset loader")
