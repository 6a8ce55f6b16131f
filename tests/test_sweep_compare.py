"""A sweep's declared comparisons: validated against what it runs, recorded for the report."""

import json

import pytest
import yaml

from metalora.errors import MlbenchError
from metalora.runs.sweep import load_sweep, write_sweep_record

GRID = {"method": ["lora", "metalora"], "shots": [10, 50], "benchmarks": [["bbh", "mmlu"]]}
PRIMARY = {"a": "metalora", "b": "lora", "shots": 50, "benchmarks": ["bbh"]}


def sweep_file(tmp_path, compare):
    path = tmp_path / "table9.yaml"
    path.write_text(yaml.safe_dump({"description": "d", "grid": GRID, "compare": compare}))
    return path


def test_compare_is_recorded_under_the_store(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, {"primary": PRIMARY}))
    assert sweep.compare == {"primary": PRIMARY}
    path = write_sweep_record(tmp_path / "store", sweep)
    assert path == tmp_path / "store" / "sweeps" / "table9.json"
    assert json.loads(path.read_text()) == {"name": "table9", "description": "d", "compare": {"primary": PRIMARY}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"a": "dora"}, r"compare.primary.a is 'dora', not a method this sweep runs \(lora, metalora\)"),
        ({"b": "metalora"}, r"compare.primary compares 'metalora' with itself"),
        ({"shots": 25}, r"compare.primary.shots is 25, not a budget this sweep runs \(10, 50\)"),
        ({"benchmarks": ["xcopa"]}, r"compare.primary.benchmarks must list benchmarks this sweep evaluates \(bbh, mmlu\)"),
        ({"benchmarks": []}, r"compare.primary.benchmarks must list"),
        ({"metric": "acc"}, r"compare.primary needs exactly the keys a, b, shots, benchmarks, got a, b, benchmarks, metric, shots"),
    ],
)
def test_compare_names_only_what_the_sweep_runs(tmp_path, change, message):
    with pytest.raises(MlbenchError, match=message):
        load_sweep(sweep_file(tmp_path, {"primary": {**PRIMARY, **change}}))
