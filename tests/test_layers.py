"""The layers import one way, down, and the report renders without torch.

Ranks, bottom up: helpers, data and models (``metalora.errors/files/options/provenance/models``,
``metalora.data``) < training mechanics (``metalora.training``) and evaluation (``eval_tasks``) <
method modules (``baselines``, ``metalora.methods.*``) < the method table (``metalora.methods``) <
runs (``metalora.runs``) < the report (``reports``) < the CLI. A module may import its own layer
group or any lower rank; every import statement counts, also those inside functions.
"""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("metalora", "baselines", "eval_tasks", "reports")


def layer(module: str) -> tuple[int, str]:
    """(rank, group) of a project module."""
    if module == "metalora.cli":
        return 6, "cli"
    for prefix, rank in (("reports", 5), ("metalora.runs", 4), ("metalora.training", 1), ("eval_tasks", 1)):
        if module == prefix or module.startswith(prefix + "."):
            return rank, prefix
    if module == "metalora.methods":
        return 3, "table"
    if module.startswith(("metalora.methods.", "baselines.")) or module == "baselines":
        return 2, "methods"
    return 0, "base"


def project_modules():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def test_imports_point_down():
    upward = []
    for module, path in project_modules():
        rank, group = layer(module)
        for target in imported(path):
            target_rank, target_group = layer(target)
            if target_group != group and target_rank >= rank:
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_layer_check_sees_an_upward_import():
    # the check itself can fail: a training module importing the table would be reported
    assert layer("metalora.training.loop")[0] < layer("metalora.methods")[0]
    assert layer("metalora.methods.meta") == (2, "methods") and layer("baselines.lora") == (2, "methods")


def test_reports_import_no_torch():
    modules = sorted(module for module, _ in project_modules() if layer(module)[1] == "reports")
    assert "reports.load" in modules and "reports.site" in modules
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    if 'torch' in sys.modules:\n"
        "        print(name); break\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"importing {result.stdout.strip()} imports torch"


def test_cli_commands_that_read_the_store_start_without_torch(tmp_path):
    """``ls``, ``show``, ``report`` and ``--help`` never import torch (seconds at start-up); ``run``
    and ``sweep`` load the method table only when invoked."""
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from metalora.cli import app\n"
        "runner = CliRunner()\n"
        f"store, out = {str(tmp_path / 'store')!r}, {str(tmp_path / 'site')!r}\n"
        "import os; os.makedirs(store)\n"
        "for args in (['--help'], ['ls', '--store', store], ['show', 'abc', '--store', store], ['ls', '--help'],\n"
        "             ['report', '--store', store, '--out', out], ['gc', '--store', store], ['store', 'rebuild', '--store', store]):\n"
        "    result = runner.invoke(app, args)\n"
        "    assert result.exit_code in (0, 2), (args, result.output)\n"
        "    assert 'torch' not in sys.modules, args\n"
        "result = runner.invoke(app, ['run', '--help'])\n"
        "assert result.exit_code == 0 and '--inner-steps' in result.output and '--wait' in result.output\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], check=False, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "True\n"  # the check can fail: run's flags did import it
