"""The hub fallback: the same benchmarks through ``datasets`` when no data root is set.

Rows come back as plain dicts in the hub dataset's schema; each loader converts them to the
upstream schema it already parses, so one parser serves both sources.
"""

from __future__ import annotations

from metalora.errors import MlbenchError


def load_hub_rows(dataset_id: str, config: str | None, split: str) -> list[dict]:
    try:
        import datasets

        dataset = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as error:  # noqa: BLE001 - any hub failure gets the same one-line advice
        name = f"{dataset_id}" + (f" ({config})" if config else "")
        raise MlbenchError(
            f"could not load {name} split {split} from the hub ({type(error).__name__}); with no "
            "network, set MLBENCH_DATA_DIR or --data-root to a local mirror laid out like shared/data"
        ) from None
    return [dict(row) for row in dataset]
