"""The primary comparisons sweeps declare, read from ``<store>/sweeps/*.json``.

``mlbench sweep`` writes one file per sweep: ``{"name", "description", "compare"}`` where
``compare`` may hold ``{"primary": {"a": method, "b": method, "shots": n, "benchmarks": [...]}}``
(Table 2: MeTA-LoRA against LoRA at 50 examples per task on ``heldout`` and ``bbh``). A declared
primary comparison is tested on its own at alpha 0.05, without a multiple-testing correction,
because it was chosen before the results were seen; every other comparison is corrected. A file
that cannot be read or does not follow this shape is reported, never fatal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SWEEPS_FOLDER = "sweeps"


@dataclass(frozen=True)
class Primary:
    sweep: str  # the sweep's name (its YAML stem)
    a: str  # method whose advantage is tested (A − B)
    b: str
    shots: int | str
    benchmarks: tuple[str, ...]  # leaderboard columns the comparison is declared on

    def matches(self, a_method: str, b_method: str, shots, column: str) -> bool:
        return (a_method, b_method) == (self.a, self.b) and shots == self.shots and column in self.benchmarks


@dataclass(frozen=True)
class Declarations:
    primaries: tuple[Primary, ...]
    problems: tuple[str, ...]  # sweep files that could not be used, and why


def read_primaries(store: Path) -> Declarations:
    folder = Path(store) / SWEEPS_FOLDER
    primaries, problems = [], []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            primary = _primary(path.stem, document)
        except (OSError, ValueError, TypeError, KeyError) as error:
            problems.append(f"{path.name}: {error}")
            continue
        if primary is not None:
            primaries.append(primary)
    return Declarations(tuple(primaries), tuple(problems))


def _primary(stem: str, document) -> Primary | None:
    if not isinstance(document, dict):
        raise TypeError("not a JSON object")
    declared = (document.get("compare") or {}).get("primary")
    if declared is None:
        return None
    a, b, shots, benchmarks = (declared[key] for key in ("a", "b", "shots", "benchmarks"))
    if not (isinstance(a, str) and isinstance(b, str) and a != b):
        raise ValueError("compare.primary needs two different method names a and b")
    if isinstance(benchmarks, str) or not all(isinstance(name, str) for name in benchmarks):
        raise TypeError("compare.primary.benchmarks must be a list of benchmark names")
    if isinstance(shots, bool) or not isinstance(shots, (int, str)):
        raise TypeError("compare.primary.shots must be a number of examples per task or 'full'")
    return Primary(str(document.get("name") or stem), a, b, shots, tuple(benchmarks))
