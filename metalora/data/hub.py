"""The hub fallback: the same benchmarks through ``datasets`` when no data root is set.

Rows come back as plain dicts in the hub dataset's schema; each loader converts them to the
upstream schema it already parses, so one parser serves both sources.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from metalora.errors import MlbenchError

_ADVICE = "set MLBENCH_DATA_DIR or --data-root to a local mirror laid out like shared/data"


def hub_unavailable_reason() -> str | None:
    """Why the hub cannot be used right now, or None. A cheap probe, so an offline machine gets one
    clear line at once instead of minutes of retries inside ``datasets``."""
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").lower() in ("1", "true", "yes"):
            return f"{variable} is set"
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as error:
        return f"{host} is unreachable ({error.strerror or type(error).__name__})"
    return None


def load_hub_rows(dataset_id: str, config: str | None, split: str) -> list[dict]:
    name = f"{dataset_id}" + (f" ({config})" if config else "")
    reason = hub_unavailable_reason()
    if reason:
        raise MlbenchError(f"no data root is set and the hub cannot be used to load {name}: {reason}; {_ADVICE}")
    try:
        import datasets

        dataset = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as error:  # noqa: BLE001 - any hub failure gets the same one-line advice
        raise MlbenchError(
            f"could not load {name} split {split} from the hub ({type(error).__name__}); with no network, {_ADVICE}"
        ) from None
    return [dict(row) for row in dataset]
