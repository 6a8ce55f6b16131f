"""Training checkpoints: everything needed to continue a run exactly where it stopped.

One safetensors file holds the trainable parameters, the optimizer's tensors and torch's RNG
state; its metadata holds the rest as JSON (step, optimizer and scheduler scalars, the data
sampler's state, the loss log). Written to a temp file and renamed, so a kill at any moment leaves
either the previous checkpoint or the new one, never half of one. On CPU a resumed run produces
the same adapter, bit for bit, as one that was never interrupted.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save

from metalora.files import write_atomic

CHECKPOINT_FILE = "checkpoint.safetensors"


@dataclass
class TrainState:
    step: int
    params: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    sampler: dict
    log: list[dict]
    rng: dict[str, torch.Tensor]


def capture_rng() -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state.update({f"cuda{index}": s for index, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def restore_rng(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    cuda = [state[key] for key in sorted(k for k in state if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _split_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> (tensors by flat key, JSON-able rest)."""
    tensors, scalars = {}, {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in tensors.items():
        _, index, key = flat.split("/", 2)
        state.setdefault(int(index), {})[key] = value
    for flat, value in rest["scalars"].items():
        index, key = flat.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


class FolderCheckpointer:
    """Saves a ``TrainState`` into ``folder`` every ``every`` steps and/or once ``every_s`` seconds
    have passed since the last save (or since it was made); loads the latest one.

    A save costs the same whatever a step costs (a SmolLM2-135M LoRA with its AdamW state is a
    36.7 MB file, written and synced: 0.14 s on the H200, bench/checkpoint_cost.py), so a step
    count alone is wrong at both ends: every 10 steps is a save about every 1.7 s of GPU training
    (8.5% of its time), and one every few minutes on a CPU. A time interval bounds the training a
    kill loses instead.
    """

    def __init__(self, folder: str | os.PathLike, every: int | None = None, every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.folder = Path(folder)
        self.every = every or None  # 0: never by step count
        self.every_s = every_s
        self._clock = clock
        self._last_save = clock()

    @property
    def path(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    def due(self, step: int, total_steps: int) -> bool:
        """Whether to save after ``step`` (never after the last: the adapter is saved then)."""
        if step >= total_steps:
            return False
        by_steps = self.every is not None and step % self.every == 0
        return by_steps or (self.every_s is not None and self._clock() - self._last_save >= self.every_s)

    def save(self, state: TrainState) -> None:
        optimizer_tensors, optimizer_rest = _split_optimizer(state.optimizer)
        tensors = {f"params/{name}": value.detach().cpu().contiguous() for name, value in state.params.items()}
        tensors.update({key: value.detach().cpu().contiguous() for key, value in optimizer_tensors.items()})
        tensors.update({f"rng/{key}": value for key, value in state.rng.items()})
        metadata = {
            "step": state.step,
            "optimizer": optimizer_rest,
            "scheduler": state.scheduler,
            "sampler": state.sampler,
            "log": state.log,
        }
        # Serialised in memory and written by Python: a full disk is an OSError (one line, no file).
        write_atomic(self.path, save(tensors, metadata={"mlbench": json.dumps(metadata)}))
        self._last_save = self._clock()

    def _metadata(self) -> dict:
        with safe_open(str(self.path), framework="pt") as reader:
            return json.loads(reader.metadata()["mlbench"])

    def saved_step(self) -> int | None:
        """The step of the saved checkpoint, from its metadata alone; None without one, or for a
        file that cannot be read."""
        if not self.path.is_file():
            return None
        try:
            return int(self._metadata()["step"])
        except Exception:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
            return None

    def load(self) -> TrainState | None:
        if not self.path.is_file():
            return None
        metadata = self._metadata()
        tensors = load_file(str(self.path))

        def group(prefix: str) -> dict[str, torch.Tensor]:
            return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}

        optimizer_tensors = {key: value for key, value in tensors.items() if key.startswith("optimizer/")}
        return TrainState(
            step=metadata["step"],
            params=group("params/"),
            optimizer=_join_optimizer(optimizer_tensors, metadata["optimizer"]),
            scheduler=metadata["scheduler"],
            sampler=metadata["sampler"],
            log=metadata["log"],
            rng=group("rng/"),
        )

    def clear(self) -> None:
        if self.path.exists():
            self.path.unlink()


def restore_training(state: TrainState, params: dict[str, torch.Tensor], optimizer, scheduler, sampler) -> None:
    with torch.no_grad():
        for name, value in params.items():
            value.copy_(state.params[name].to(value.device, value.dtype))
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    sampler.load_state_dict(state.sampler)
    restore_rng(state.rng)


def capture_training(step, params, optimizer, scheduler, sampler, log) -> TrainState:
    return TrainState(
        step=step,
        params={name: value.detach().clone() for name, value in params.items()},
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        sampler=sampler.state_dict(),
        log=list(log),
        rng=capture_rng(),
    )
