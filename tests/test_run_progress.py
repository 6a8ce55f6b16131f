"""What `mlbench run` draws on a terminal: a training bar from step 1 with steps, loss and ETA, a bar
across benchmarks; none of it when the output is not a terminal (a log file, CI), where only the
lines stay."""

from __future__ import annotations

import io

from rich.console import Console

from metalora.runs.display import RunProgress


def drive(terminal: bool) -> str:
    stream = io.StringIO()
    progress = RunProgress(Console(file=stream, force_terminal=terminal, width=150, color_system=None))
    progress.report("model loaded (tiny) in 0.1 s")
    progress.expect_benchmarks(["bbh", "mmlu"])
    progress.on_step({"step": 1, "loss": 2.5}, total=40)
    progress._progress.refresh()  # what the bar's own thread draws ten times a second
    progress.on_step({"step": 2, "loss": 2.25}, total=40)
    progress.on_benchmark("bbh", None)
    progress._progress.refresh()
    progress.on_benchmark("bbh", {"items": 27, "seconds": 3.0, "items_per_second": 9.0})
    progress.close()
    return stream.getvalue()


def test_a_terminal_gets_a_training_bar_from_step_one_with_eta_and_a_benchmark_bar():
    shown = drive(terminal=True)
    assert "training" in shown and "1/40 steps" in shown and "loss 2.5000" in shown and "ETA" in shown
    assert "evaluating bbh" in shown and "0/2 benchmarks" in shown
    assert "  training: 2 steps in " in shown and "loss 2.5000 -> 2.2500" in shown
    assert "  bbh: 27 items in 3.0 s (9.0 items/s)" in shown


def test_without_a_terminal_only_the_lines_are_written():
    shown = drive(terminal=False)
    assert "ETA" not in shown and "1/40" not in shown and "benchmarks" not in shown
    assert shown.splitlines()[0] == "  model loaded (tiny) in 0.1 s"
    assert "  training: 2 steps in " in shown and "  bbh: 27 items in 3.0 s (9.0 items/s)" in shown
