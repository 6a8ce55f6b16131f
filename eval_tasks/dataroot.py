"""How the data root reaches the task YAMLs at run time.

The YAMLs name no data path. Each task's ``custom_dataset`` is a ``!function`` loader from this
package, and lm-eval calls it as ``custom_dataset(**task.metadata, **task.dataset_kwargs)``. The
harness builds its ``TaskManager(include_path=..., metadata=task_metadata(root))``, and lm-eval
merges that metadata into every task it loads, so the loader receives the root as an ordinary
argument for that one evaluation: no environment variable is changed, no file is written, no
module state is kept, and two evaluations with different roots can run in one process.

Why not the alternatives: an environment variable set "for the duration of the call" is process
state that leaks into threads and nested calls; generated per-call YAMLs put paths on disk and
make the task files no longer the single definition; ``dataset_path``/``data_files`` overrides
only fit formats ``datasets`` can read unaided (BBH prompt files, the XWinograd TSV and MMLU's
header-less CSV need parsing).

Outside the harness (lm-eval's own CLI with ``--include_path eval_tasks``) the metadata key is
absent and the loaders fall back to ``MLBENCH_DATA_DIR`` and then the hub, like the training
tasks; ``--metadata '{"mlbench_data_root": "/path"}'`` selects a root explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping

from metalora.data.root import DataRoot, resolve_data_root

DATA_ROOT_KEY = "mlbench_data_root"


def task_metadata(root: DataRoot) -> dict[str, str | None]:
    """TaskManager metadata that points every mlbench task at ``root`` (None: the hub)."""
    return {DATA_ROOT_KEY: None if root.is_hub else str(root.path)}


def root_from_metadata(metadata: Mapping[str, object]) -> DataRoot:
    if DATA_ROOT_KEY not in metadata:
        return resolve_data_root()
    value = metadata[DATA_ROOT_KEY]
    return DataRoot(None) if value in (None, "") else resolve_data_root(str(value))


def dataset_dict(splits: Mapping[str, list[dict]]):
    """An in-memory ``datasets.DatasetDict`` (nothing is cached on disk)."""
    import datasets

    return datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})
