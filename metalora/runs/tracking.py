"""Optional experiment logging (``--log-to``): training loss and learning rate per step, and each
benchmark's headline metric when a run is evaluated, to TensorBoard or Weights & Biases.

Neither package is a dependency: ``check_tracker`` refuses a missing one in one line before any
work. How to execute, not what: the choice is an execution option, never part of the run id.
TensorBoard writes event files to the run's ``tensorboard/`` folder (``tensorboard --logdir
runs``); W&B logs to the project named by ``$WANDB_PROJECT`` (default ``mlbench``) as a run named
by the run id, with W&B's own settings (``WANDB_MODE=offline`` and so on).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from metalora.errors import MlbenchError

TENSORBOARD_DIR = "tensorboard"


class Tracker(ABC):
    """Where one run's figures go. ``log_step`` takes a training log record ({"step", "loss", "lr",
    ...}); every finite number in it is logged under ``train/``."""

    @abstractmethod
    def log_step(self, record: Mapping) -> None: ...

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


def _scalars(record: Mapping) -> dict[str, float]:
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


class TensorBoardTracker(Tracker):
    def __init__(self, run_id: str, folder: Path, config: Mapping):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(folder) / TENSORBOARD_DIR))
        self.writer.add_text("config", "```\n" + json.dumps(dict(config), indent=2, default=str) + "\n```")

    def log_step(self, record):
        for key, value in _scalars(record).items():
            self.writer.add_scalar(f"train/{key}", value, int(record["step"]))

    def log_metrics(self, metrics, step):
        for key, value in _scalars(metrics).items():
            self.writer.add_scalar(f"eval/{key}", value, step)

    def close(self):
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, run_id: str, folder: Path, config: Mapping):
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "mlbench"), name=run_id, id=run_id, resume="allow",
            config=dict(config), dir=str(folder),
        )

    def log_step(self, record):
        self.run.log({f"train/{key}": value for key, value in _scalars(record).items()}, step=int(record["step"]))

    def log_metrics(self, metrics, step):
        values = {f"eval/{key}": value for key, value in _scalars(metrics).items()}
        self.run.summary.update(values)

    def close(self):
        self.run.finish()


@dataclass(frozen=True)
class TrackerSpec:
    package: str  # what must be importable
    open: Callable[[str, Path, Mapping], Tracker]


TRACKERS: Mapping[str, TrackerSpec] = MappingProxyType({
    "tensorboard": TrackerSpec("tensorboard", TensorBoardTracker),
    "wandb": TrackerSpec("wandb", WandbTracker),
})


def check_tracker(name: str) -> None:
    """One line, before any work, for an unknown name or a package that is not installed."""
    if name not in TRACKERS:
        raise MlbenchError(f"--log-to must be one of {', '.join(TRACKERS)}, got {name!r}")
    package = TRACKERS[name].package
    if importlib.util.find_spec(package) is None:
        raise MlbenchError(
            f"--log-to {name} needs the {package} package, which is not installed; "
            f"pip install {package} (or leave out --log-to)"
        )


def open_tracker(name: str | None, run_id: str, folder: Path, config: Mapping) -> Tracker | None:
    if name is None:
        return None
    check_tracker(name)
    return TRACKERS[name].open(run_id, Path(folder), config)
