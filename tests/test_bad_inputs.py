"""Every bad input and fault ends the same way: exit 2, one line ``mlbench: error: ...`` naming what
is wrong, no traceback, nothing half-written, no run left behind, nothing outside the output deleted.

The table below is the contract; each case runs the real CLI in-process (typer's CliRunner) against
a tiny random-init model folder, the shared data root, or a mirror of it with one file broken.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metalora.cli import app


@dataclass(frozen=True)
class Bad:
    """One bad input: CLI arguments (``{model}``, ``{data}``, ``{store}``, ``{tmp}`` are filled in),
    the fragment the error line must contain, files written under the test folder first, and data
    files replaced in a mirror of the data root (``{data}`` then points at the mirror)."""

    name: str
    args: tuple[str, ...]
    expect: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    data: dict[str, str | bytes] = field(default_factory=dict)


# A run that would train quickly if it got that far: one small task, a tiny budget, MGSM evaluated.
RUN = ("run", "--model", "{model}", "--data-root", "{data}", "--store", "{store}", "--device", "cpu",
       "--profile", "smoke", "--method", "lora", "--tasks", "strategyqa", "--shots", "10",
       "--benchmarks", "mgsm", "--eval-limit", "1")
SWEEP = ("sweep", "{tmp}/s.yaml", "--dry-run", "--data-root", "{data}", "--store", "{store}", "--device", "cpu")


def sweep_file(body: str | bytes) -> dict[str, str | bytes]:
    return {"s.yaml": body}


GOOD_SWEEP_HEAD = "description: test\ndefaults: {model: {model}, tasks: [strategyqa], benchmarks: [mgsm]}\n"
ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
)
MMLU = "mmlu/test/abstract_algebra_test.csv"
BIGBENCH = "bigbench/strategyqa/task.json"
GSM8K = "gsm8k/train.jsonl"
XCOPA = "xcopa/data/et/val.et.jsonl"
MGSM = "mgsm/mgsm_en.tsv"
BBH = "bbh/bbh/navigate.json"
BBH_PROMPT = "bbh/cot-prompts/navigate.txt"
XWINOGRAD = "xwinograd/dataset.tsv"

CASES = [
    # ---- flags ----
    Bad("unknown method", RUN + ("--method", "qlora"), "unknown method 'qlora'; choose from"),
    Bad("shots below 10", RUN + ("--shots", "5"), "shots must be an integer from 10 to 100 or 'full', got '5'"),
    Bad("shots not a number", RUN + ("--shots", "many"), "shots must be an integer from 10 to 100 or 'full'"),
    Bad("unknown profile", RUN + ("--profile", "huge"), "unknown profile 'huge'; choose from full, quick, smoke"),
    Bad("unknown dtype", RUN + ("--dtype", "float8"), "dtype must be one of"),
    Bad("unknown scenario", RUN + ("--scenario", "vision"), "unknown scenario 'vision'"),
    Bad("unknown task", RUN + ("--tasks", "boolean_expressions"), "unknown training task 'boolean_expressions'"),
    Bad("unknown benchmark", RUN + ("--benchmarks", "gsm9k"), "unknown benchmark 'gsm9k'"),
    Bad("rank zero", RUN + ("--rank", "0"), "rank must be a positive integer, got 0"),
    Bad("steps zero", RUN + ("--steps", "0"), "steps must be a positive integer, got 0"),
    Bad("unknown budget rule", RUN + ("--budget-rule", "flops"),
        "budget_rule must be one of matched_compute, matched_updates, epochs, got 'flops'"),
    Bad("knob of another budget rule", RUN + ("--budget-rule", "epochs", "--steps", "30"),
        "steps does not apply under budget_rule epochs, which reads epochs only"),
    Bad("budget leaves examples unseen", RUN + ("--steps", "2"),
        "under budget_rule=matched_updates lora gets 2 updates of 4 example passes, too few to see every one of "
        "the 10 examples of its largest task at least once (it needs 3 updates); raise steps to at least 3"),
    Bad("unknown loss weighting", RUN + ("--loss-weighting", "example"),
        "loss_weighting must be one of task, token, got 'example'"),
    Bad("negative lr", RUN + ("--lr", "-1"), "lr must be a positive number, got -1.0"),
    Bad("batch size zero", RUN + ("--batch-size", "0"), "batch_size must be a positive integer, got 0"),
    Bad("negative seed", RUN + ("--seed", "-1"), "seed must be a non-negative integer, got -1"),
    Bad("dropout above 1", RUN + ("--dropout", "1.5"), "dropout must be between 0.0 and 0.99, got 1.5"),
    Bad("eval limit zero", RUN + ("--eval-limit", "0"), "eval_limit must be a positive integer, got 0"),
    Bad("max gen tokens zero", RUN + ("--max-gen-tokens", "0"), "max_gen_tokens must be a positive integer, got 0"),
    Bad("full cap zero", RUN + ("--full-cap", "0"), "full_cap must be a positive integer, got 0"),
    Bad("eval batch size not a number", RUN + ("--eval-batch-size", "many"),
        "--eval-batch-size must be a positive integer or 'auto', got 'many'"),
    Bad("checkpoint every zero", RUN + ("--checkpoint-every", "0"), "--checkpoint-every must be a positive number"),
    Bad("checkpoint every zero seconds", RUN + ("--checkpoint-every", "0s"),
        "--checkpoint-every must be a positive number of steps (e.g. 500) or of seconds (e.g. 60s), got '0s'"),
    Bad("checkpoint every in minutes", RUN + ("--checkpoint-every", "5m"),
        "--checkpoint-every must be a positive number of steps (e.g. 500) or of seconds (e.g. 60s), got '5m'"),
    Bad("support + query above the budget", RUN + ("--method", "metalora", "--support-size", "8", "--query-size", "8"),
        "support_size + query_size = 16 is larger than task strategyqa's budget of 10 examples"),
    Bad("hydralora without heads", RUN + ("--method", "hydralora", "--num-heads", "0"),
        "num_heads must be a positive integer, got 0"),
    Bad("unknown variant", RUN + ("--method", "metalora", "--variant", "third_order"), "unknown MeTA-LoRA variant"),
    Bad("unknown device", RUN + ("--device", "tpu0"), "unknown device 'tpu0'; use cpu, cuda or cuda:N"),
    Bad("device index not a number", RUN + ("--device", "cuda:x"), "unknown device 'cuda:x'; use cpu, cuda or cuda:N"),
    Bad("infinite lr", RUN + ("--lr", "inf"), "lr must be a finite positive number, got inf"),
    Bad("nan lr", RUN + ("--lr", "nan"), "lr must be a finite positive number, got nan"),
    Bad("infinite alpha", RUN + ("--alpha", "inf"), "alpha must be a finite positive number, got inf"),
    Bad("infinite inner lr", RUN + ("--method", "metalora", "--inner-lr", "inf"),
        "inner_lr must be a finite positive number, got inf"),
    Bad("nan inner lr", RUN + ("--method", "metalora", "--inner-lr", "nan"), "inner_lr must be a finite positive number"),
    Bad("infinite epochs", RUN + ("--epochs", "inf"), "epochs must be a finite positive number, got inf"),
    Bad("infinite weight decay", RUN + ("--weight-decay", "inf"), "weight_decay must be between 0.0 and 1.0, got inf"),
    Bad("nan dropout", RUN + ("--dropout", "nan"), "dropout must be between 0.0 and 0.99, got nan"),
    Bad("eval batch size zero", RUN + ("--eval-batch-size", "0"), "--eval-batch-size must be a positive integer or 'auto', got 0"),
    Bad("eval decode rows zero", RUN + ("--eval-decode-rows", "0"), "--eval-decode-rows must be a positive integer, got 0"),
    Bad("eval shapes unknown", RUN + ("--eval-shapes", "exact"), "--eval-shapes must be one of stock, stock-scored, fast, got 'exact'"),
    Bad("eval merge unknown", RUN + ("--eval-merge-lora", "maybe"), "--eval-merge-lora must be one of on, off, got 'maybe'"),
    Bad("empty task list", RUN + ("--tasks", ""), "tasks is empty; name at least one"),
    Bad("sequence length 1", RUN + ("--max-seq-len", "1"), "max_seq_len must be at least 2"),
    Bad("sequence length cuts every prompt", RUN + ("--max-seq-len", "3"),
        "max_seq_len 3 cuts every example of task strategyqa down to its target alone (nothing to learn from); use at least"),
    Bad("reptile without inner steps", RUN + ("--method", "metalora", "--variant", "reptile", "--inner-steps", "0"),
        "inner_steps=0 would leave variant reptile's support sets unused; use at least 1, or variant phase2_only"),
    Bad("phase1_only without inner steps", RUN + ("--method", "metalora", "--variant", "phase1_only", "--inner-steps", "0"),
        "inner_steps=0 would leave variant phase1_only's support sets unused"),
    Bad("unknown target module", RUN + ("--target-modules", "nosuch_proj"),
        "target_modules nosuch_proj match no linear layer of model {model}; its layers are named down_proj, gate_proj"),
    Bad("store under a file", RUN + ("--store", "{tmp}/afile/store"), "cannot write", files={"afile": ""}),
    Bad("missing data root", RUN + ("--data-root", "{tmp}/nowhere"), "is not a folder"),
    Bad("empty model name", RUN + ("--model", " "), "model name is empty"),
    # ---- sweep files ----
    Bad("sweep file missing", ("sweep", "{tmp}/none.yaml", "--dry-run"), "sweep file {tmp}/none.yaml not found"),
    Bad("alias bomb in description", SWEEP, "expands to more than 100,000 values once its aliases",
        files=sweep_file(ALIAS_BOMB + "description: *g\ngrid: {method: [lora]}\n")),
    Bad("alias bomb in model", SWEEP, "expands to more than 100,000 values once its aliases",
        files=sweep_file("defaults:\n  model: [" + ", ".join(line.split(": ", 1)[1] for line in ALIAS_BOMB.splitlines())
                         + "]\ngrid: {method: [lora]}\n")),
    Bad("duplicated key", SWEEP, "key 'seed' is given twice (lines 4 and 6); keep one of them",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid:\n  seed: [0]\n  method: [lora]\n  seed: [1]\n")),
    Bad("sweep not UTF-8", SWEEP, "s.yaml is not UTF-8 text (line 3); save it as UTF-8",
        files=sweep_file(b"description: caf\xc3\xa9\ngrid: {method: [lora]}\n# caf\xe9\n")),
    Bad("nested list in a grid", SWEEP, "grid.shots[0] must be a single value (or a list of names",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid: {method: [lora], shots: [[10, 20]]}\n")),
    Bad("mapping as a grid value", SWEEP, "grid.method[0] must be a single value",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid: {method: [{name: lora}]}\n")),
    Bad("empty default value", SWEEP, "defaults.model has no value; give one or leave the key out",
        files=sweep_file("defaults: {model: }\ngrid: {method: [lora]}\n")),
    Bad("date as a seed", SWEEP, "grid.seed[0] must be a single value",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid: {method: [lora], seed: [2024-01-01]}\n")),
    Bad("description not text", SWEEP, "description must be one text, got a list",
        files=sweep_file("description: [a, b]\ngrid: {method: [lora]}\n")),
    Bad("million-run grid", SWEEP, "the grid makes 1,000,000 runs, more than the 5,000 a sweep may plan",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid:\n" + "".join(
            f"  {key}: [{', '.join(str(v) for v in values)}]\n"
            for key, values in {"seed": range(100), "rank": range(1, 101), "steps": range(1, 101)}.items()))),
    Bad("malformed YAML", SWEEP, "malformed YAML in {tmp}/s.yaml at line 3",
        files=sweep_file("grid:\n  method: [lora\n  shots: 10\n")),
    Bad("unknown sweep key", SWEEP, "unknown key(s) grids; allowed: description, defaults, grid, runs",
        files=sweep_file("grids: {method: [lora]}\n")),
    Bad("unknown option in a grid", SWEEP, "grid: unknown option(s) learning_rate; allowed:",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid: {method: [lora], learning_rate: [0.1]}\n")),
    Bad("grid value not a list", SWEEP, "grid.method must be a non-empty list of values, got 'lora'",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid: {method: lora}\n")),
    Bad("runs not a list of mappings", SWEEP, "runs must be a list of mappings of options",
        files=sweep_file(GOOD_SWEEP_HEAD + "runs: [lora]\n")),
    Bad("self-referencing alias", SWEEP, "an alias refers to its own anchor (line 1)",
        files=sweep_file("description: &d [1, *d]\ngrid: {method: [lora]}\n")),
    Bad("nesting too deep", SWEEP, "is nested more than 64 levels deep (line 1)",
        files=sweep_file("description: " + "[" * 3000 + "]" * 3000 + "\n")),
    Bad("seed true", SWEEP, "run 1 (method=lora, seed=True): seed must be an integer, got True",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid: {method: [lora], seed: [true]}\n")),
    Bad("lr as words", SWEEP, "lr must be a number (e.g. 0.0002 or 2e-4), got 'fast'",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid: {method: [lora], lr: [fast]}\n")),
    Bad("infinite lr in a sweep", SWEEP, "lr must be a finite positive number, got inf",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid: {method: [lora], lr: [.inf]}\n")),
    Bad("steps as a float", SWEEP, "steps must be an integer, got 100.0",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid: {method: [lora], steps: [1e2]}\n")),
    Bad("a bad run inside a grid", SWEEP, "run 2 (method=lora, shots=5): shots must be an integer from 10 to 100",
        files=sweep_file(GOOD_SWEEP_HEAD + "grid: {method: [lora], shots: [10, 5]}\n")),
    # ---- data files (a mirror of the data root with one file broken) ----
    Bad("BIG-bench task not UTF-8", RUN, f"data file {{data}}/{BIGBENCH} is not UTF-8 text (line 1)",
        data={BIGBENCH: b'{"examples": [{"input": "caf\xe9", "target_scores": {"yes": 1}}]}'}),
    Bad("BIG-bench example without target_scores", RUN,
        f"malformed BIG-bench task file {{data}}/{BIGBENCH}: example 1: needs 'target_scores'",
        data={BIGBENCH: '{"examples": [{"input": "a", "target_scores": {"yes": 1}}, {"input": "b"}]}'}),
    Bad("BIG-bench score as text", RUN, "example 0: target_scores['yes'] must be a number, got 'high'",
        data={BIGBENCH: '{"examples": [{"input": "a", "target_scores": {"yes": "high", "no": 0}}]}'}),
    Bad("BIG-bench input not text", RUN, "example 0: needs 'input' as text",
        data={BIGBENCH: '{"examples": [{"input": ["a"], "target_scores": {"yes": 1}}]}'}),
    Bad("BIG-bench examples not a list", RUN, "expected an object with an 'examples' list",
        data={BIGBENCH: '{"examples": {"input": "a"}}'}),
    Bad("BIG-bench prefix not text", RUN, "'task_prefix' must be text, got 3",
        data={BIGBENCH: '{"task_prefix": 3, "examples": [{"input": "a", "target_scores": {"yes": 1}}]}'}),
    Bad("empty task budget", RUN + ("--shots", "full"), "task strategyqa has no training items",
        data={BIGBENCH: '{"examples": []}'}),
    Bad("GSM8K row without answer", RUN + ("--tasks", "gsm8k"), f"malformed data file {{data}}/{GSM8K} at line 2: missing field 'answer'",
        data={GSM8K: '{"question": "q", "answer": "a #### 1"}\n{"question": "q2"}\n'}),
    Bad("GSM8K answer a number", RUN + ("--tasks", "gsm8k"), "at line 1: field 'answer' must be text, got int 7",
        data={GSM8K: '{"question": "q", "answer": 7}\n'}),
    Bad("GSM8K answer without final number", RUN + ("--tasks", "gsm8k"), "field 'answer' must end with '#### <number>'",
        data={GSM8K: '{"question": "q", "answer": "seven"}\n'}),
    Bad("GSM8K broken JSON line", RUN + ("--tasks", "gsm8k"), f"malformed JSON in {{data}}/{GSM8K} at line 1",
        data={GSM8K: '{"question": "q", "answer": \n'}),
    Bad("XCOPA label out of range", RUN + ("--scenario", "multilingual", "--tasks", "xcopa_et"),
        f"malformed data file {{data}}/{XCOPA} at line 1: field 'label' must be 0 or 1, got 2",
        data={XCOPA: '{"premise": "p.", "choice1": "a", "choice2": "b", "question": "cause", "label": 2}\n'}),
    Bad("XCOPA row a list", RUN + ("--scenario", "multilingual", "--tasks", "xcopa_et"),
        "at line 1: expected an object with premise, choice1, choice2, question, label, got list",
        data={XCOPA: '["p.", "a", "b"]\n'}),
    Bad("XCOPA question unknown", RUN + ("--scenario", "multilingual", "--tasks", "xcopa_et"),
        "field 'question' must be 'cause' or 'effect', got 'why'",
        data={XCOPA: '{"premise": "p.", "choice1": "a", "choice2": "b", "question": "why", "label": 1}\n'}),
    Bad("MMLU row with five columns", RUN + ("--benchmarks", "mmlu"),
        f"malformed MMLU file {{data}}/{MMLU} at line 2: expected 6 columns",
        data={MMLU: "q1,a,b,c,d,A\nq2,a,b,c,B\n"}),
    Bad("MMLU answer not a letter", RUN + ("--benchmarks", "mmlu"), f"malformed MMLU file {{data}}/{MMLU} at line 1",
        data={MMLU: "q1,a,b,c,d,E\n"}),
    Bad("MMLU not UTF-8", RUN + ("--benchmarks", "mmlu"), f"data file {{data}}/{MMLU} is not UTF-8 text (line 2)",
        data={MMLU: b"q1,a,b,c,d,A\nq\xe92,a,b,c,d,B\n"}),
    Bad("BBH target a number", RUN + ("--benchmarks", "bbh"), f"malformed BBH file {{data}}/{BBH} at line 1, example 2",
        data={BBH: '{"examples": [{"input": "a", "target": "Yes"}, {"input": "b", "target": 1}]}'}),
    Bad("BBH prompt without header line", RUN + ("--benchmarks", "bbh_cot"),
        f"malformed BBH prompt file {{data}}/{BBH_PROMPT} at line 1: no '-----' line after the header",
        data={BBH_PROMPT: "Q: a\nA: Let's think step by step. So the answer is Yes.\n"}),
    Bad("MGSM line without a tab", RUN, f"malformed MGSM file {{data}}/{MGSM} at line 2: expected 'question<TAB>number'",
        data={MGSM: "q1\t3\nq2 4\n"}),
    Bad("MGSM answer not a number", RUN, f"malformed MGSM file {{data}}/{MGSM} at line 1",
        data={MGSM: "q1\tthree\n"}),
    Bad("XWinograd broken JSON", RUN + ("--benchmarks", "xwinograd"),
        f"malformed XWinograd file {{data}}/{XWINOGRAD} at line 1: Expecting ',' delimiter",
        data={XWINOGRAD: "en\tsrc\t?\tThe cat sat.\t[\"The\"\t[]\t[]\n"}),
    Bad("XCOPA test file not UTF-8", RUN + ("--benchmarks", "xcopa"), "xcopa/data/et/test.et.jsonl is not UTF-8 text (line 1)",
        data={"xcopa/data/et/test.et.jsonl": b'{"premise": "caf\xe9."}\n'}),
    # ---- model paths ----
    Bad("garbage gguf", RUN + ("--model", "{tmp}/m.gguf"), "model file {tmp}/m.gguf is not a GGUF file",
        files={"m.gguf": "not a model"}),
    Bad("missing gguf", RUN + ("--model", "{tmp}/none.gguf"), "model file {tmp}/none.gguf does not exist"),
    Bad("model folder without config", RUN + ("--model", "{tmp}/m"), "model folder {tmp}/m has no config.json",
        files={"m/README": "no model here"}),
    Bad("model that is nothing", RUN + ("--model", "no-such-model"), "model 'no-such-model' not found"),
    Bad("base model from a garbage gguf", RUN + ("--method", "base", "--model", "{tmp}/m.gguf"),
        "model file {tmp}/m.gguf is not a GGUF file", files={"m.gguf": "GGUX"}),
    # ---- reports ----
    Bad("report of a store that does not exist", ("report", "--store", "{tmp}/typo", "--out", "{tmp}/site"),
        "run store {tmp}/typo does not exist or is not a folder"),
    Bad("report over its own store", ("report", "--store", "{tmp}/st", "--out", "{tmp}"),
        "the run store {tmp}/st is inside --out {tmp}, which the report replaces", files={"st/keep.txt": "mine"}),
    Bad("report into a user's folder", ("report", "--store", "{tmp}/st", "--out", "{tmp}/mine"),
        "--out {tmp}/mine is a non-empty folder that is not an mlbench report",
        files={"st/keep.txt": "", "mine/notes.txt": "keep me"}),
    Bad("report into a file", ("report", "--store", "{tmp}/st", "--out", "{tmp}/afile"),
        "--out {tmp}/afile is not a folder", files={"st/keep.txt": "", "afile": "x"}),
]



def mirror_data_root(source: Path, target: Path, replaced: dict[str, str | bytes]) -> Path:
    """A data root of symlinks to ``source`` with some files replaced (and SHA256SUMS updated)."""
    sums = {}  # relative path -> (name as SHA256SUMS writes it, digest)
    for line in (source / "SHA256SUMS").read_text().splitlines():
        digest, _, name = line.partition("  ")
        sums[str(Path(name.lstrip("*")))] = (name, digest)
    for folder, _, names in os.walk(source):
        relative = Path(folder).relative_to(source)
        (target / relative).mkdir(parents=True, exist_ok=True)
        for name in names:
            if str(relative / name) not in replaced and name != "SHA256SUMS":
                (target / relative / name).symlink_to(Path(folder) / name)
    for name, content in replaced.items():
        data = content.encode() if isinstance(content, str) else content
        (target / name).write_bytes(data)
        sums[name] = (sums.get(name, (name, ""))[0], hashlib.sha256(data).hexdigest())
    (target / "SHA256SUMS").write_text("".join(f"{d}  {n}\n" for n, d in sums.values()))
    return target


def tree(root: Path) -> set[str]:
    return {str(Path(folder, name).relative_to(root)) for folder, _, names in os.walk(root) for name in names}


def run_bad(case: Bad, tmp_path: Path, model: Path, shared_data: Path):
    data = mirror_data_root(shared_data, tmp_path / "data", case.data) if case.data else shared_data
    fill = {"model": str(model), "data": str(data), "store": str(tmp_path / "store"), "tmp": str(tmp_path)}
    for name, content in case.files.items():
        if isinstance(content, str):
            content = content.replace("{model}", fill["model"])
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    before = tree(tmp_path)
    result = CliRunner().invoke(app, [arg.format(**fill) for arg in case.args])
    return result, before, fill


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_exits_2_with_one_line(case, tmp_path, tiny_model_dir, data_root, monkeypatch):
    from metalora.runs import worker

    loaded = []  # every check that can be made is made before the model loads
    real = worker.load_model
    monkeypatch.setattr(worker, "load_model", lambda *args, **kwargs: loaded.append(args) or real(*args, **kwargs))
    result, before, fill = run_bad(case, tmp_path, tiny_model_dir, data_root.path)
    output = f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}"
    assert result.exit_code == 2, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlbench: error: "), output
    assert case.expect.format(**fill) in lines[0], output
    assert "Traceback" not in result.stdout + result.stderr
    assert loaded == [], f"the model was loaded before the error: {output}"
    after = tree(tmp_path)
    assert before <= after, f"deleted: {before - after}"  # nothing outside the output is deleted
    # Nothing half-written and no run left behind: at most an empty store's index appears.
    new = {path for path in after - before if not path.startswith("store/index.sqlite")}
    assert not new, f"left behind: {sorted(new)}"


def test_the_table_has_at_least_sixty_distinct_cases():
    assert len({case.name for case in CASES}) == len(CASES) >= 60


def test_data_check_parses_every_file_and_counts_from_the_data(tmp_path):
    from tests.conftest import SHARED_DATA

    shared = Path(os.environ.get("MLBENCH_DATA_DIR") or SHARED_DATA)
    mirror = mirror_data_root(shared, tmp_path / "data", {
        MGSM: "q1\t1\nq2\t2\nq3\t3\n",  # 3 items instead of 250
        "xcopa/data/et/val.et.jsonl": (shared / "xcopa/data/et/val.et.jsonl").read_text().split("\n", 1)[1],
        MMLU: "q1,a,b,c,d,A\nq2,a,b,c,B\n",
    })
    result = CliRunner().invoke(app, ["data", "check", "--data-root", str(mirror)])
    assert result.exit_code == 2
    assert "  xcopa_et                             99 /    500\n" in result.stdout  # one row fewer
    assert "  mgsm                               2503 in 11 tasks  (official: 2750)\n" in result.stdout
    assert "  xwinograd                          3961 in 6 tasks\n" in result.stdout
    assert f"  mmlu                             unreadable: malformed MMLU file {mirror}/{MMLU} at line 2" in result.stdout
    assert result.stderr == (
        f"mlbench: error: 2 tasks or benchmarks cannot be read, first: malformed MMLU file {mirror}/{MMLU} "
        "at line 2: expected 6 columns (question, A, B, C, D, answer letter A-D)\n"
    )


def test_cpu_colon_zero_is_the_cpu_profile_and_dtype(tmp_path, tiny_model_dir, data_root):
    from metalora.models import pick_device, pick_dtype

    assert pick_device("cpu:0") == "cpu" and pick_dtype("auto", pick_device("cpu:0")) == "float32"
    args = [a for a in RUN if a not in ("--profile", "smoke")] + ["--device", "cpu:0", "--rank", "0"]
    fill = {"model": str(tiny_model_dir), "data": str(data_root.path), "store": str(tmp_path / "s"), "tmp": str(tmp_path)}
    result = CliRunner().invoke(app, [arg.format(**fill) for arg in args])
    assert result.exit_code == 2
    # One line: the profile is said only once the configuration is valid.
    assert result.stderr == "mlbench: error: rank must be a positive integer, got 0\n"
    from metalora.cli import _default_profile

    assert _default_profile("cpu:0", None)[0] == "quick"
