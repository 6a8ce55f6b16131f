"""What executing one run cost: wall time per phase, CPU time, throughput and peak memory.

These are ``cost.json``'s "time", "throughput" and "memory" sections (the "training" section, what
the trainer counted, is written beside them). Everything measures what *this process* did for the
run: a run resumed from a checkpoint times only the steps it trained now, a run that reused its
saved adapter records no training time, so the phases always fit inside ``total_s``.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager


def _rss_bytes() -> int:
    """The process's peak resident set size; Linux reports kibibytes, macOS bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class RunMeter:
    """Clocks started when a run begins executing; ``sections()`` is what goes into cost.json."""

    def __init__(self, device: str):
        self.device = str(device)
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self.phases: dict[str, float] = {}
        self.train_tokens: int | None = None
        self.train_examples: int | None = None
        self.eval_timing: dict[str, dict] = {}
        if self._cuda:
            import torch

            # Per run, not per process: a worker that runs many runs reports each one's own peak.
            torch.cuda.reset_peak_memory_stats(self.device)

    @property
    def _cuda(self) -> bool:
        return self.device.startswith("cuda")

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started

    def count_training(self, log: Sequence[Mapping], after_step: int = 0) -> None:
        """Tokens and examples of the steps trained in this process (those after ``after_step``),
        from the trainers' step records; not recorded when a record lacks them."""
        new = [record for record in log if record.get("step", 0) > after_step]
        if new and all(isinstance(r.get("tokens"), int) and isinstance(r.get("examples"), int) for r in new):
            self.train_tokens = sum(r["tokens"] for r in new)
            self.train_examples = sum(r["examples"] for r in new)

    def sections(self) -> dict:
        total = time.perf_counter() - self._wall
        training = self.phases.get("training")
        eval_s = {name: float(t["seconds"]) for name, t in self.eval_timing.items()
                  if isinstance(t.get("seconds"), (int, float))}
        items_per_s = {name: float(t["items_per_second"]) for name, t in self.eval_timing.items()
                       if isinstance(t.get("items_per_second"), (int, float))}

        def rate(count: int | None) -> float | None:
            return count / training if count is not None and training else None

        if self._cuda:
            import torch

            memory = {"peak_bytes": int(torch.cuda.max_memory_allocated(self.device)),
                      "device": f"{self.device} (torch.cuda.max_memory_allocated)"}
        elif self.device == "cpu":
            memory = {"peak_bytes": _rss_bytes(),
                      "device": "cpu (peak RSS of the process since it started, resource.getrusage)"}
        else:
            memory = {"peak_bytes": None, "device": f"{self.device} (not measured)"}
        return {
            "time": {
                "model_load_s": _seconds(self.phases.get("model_load")),
                "training_s": _seconds(training),
                "eval_s": eval_s,
                "total_s": _seconds(total),
                "cpu_s": _seconds(time.process_time() - self._cpu),
                # The wall time the run held its accelerator: what a GPU-hour budget counts.
                "device_s": _seconds(total) if self._cuda else None,
            },
            "throughput": {
                "train_tokens_per_s": rate(self.train_tokens),
                "train_examples_per_s": rate(self.train_examples),
                "eval_items_per_s": items_per_s,
            },
            "memory": memory,
        }


def _seconds(value: float | None) -> float | None:
    return None if value is None else float(value)
