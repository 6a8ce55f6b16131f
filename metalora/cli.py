"""The ``mlbench`` command line (typer). Every user mistake ends as one line on stderr and exit 2."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from metalora.errors import MlbenchError

app = typer.Typer(
    help="Benchmark multi-task LoRA methods (MeTA-LoRA, LoRA, HydraLoRA) in low-data regimes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect the benchmark data root.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def user_errors(command):
    """Turn an ``MlbenchError`` into one line and exit code 2; anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MlbenchError as error:
            print(f"mlbench: error: {error}", file=sys.stderr)
            raise typer.Exit(code=2) from None

    return wrapper


def console() -> Console:
    out = Console(stderr=True, soft_wrap=True)
    if not out.is_terminal:
        # lm-eval, datasets and transformers draw tqdm bars of their own; when output goes to a
        # file or pipe, silence them as our own rich bars are (set at the entry point, per process).
        os.environ.setdefault("TQDM_DISABLE", "1")
    return out


StoreOption = typer.Option(None, "--store", help="Run store folder (default: $MLBENCH_STORE or ./runs).")
DataRootOption = typer.Option(None, "--data-root", help="Benchmark data folder (default: $MLBENCH_DATA_DIR, else the hub).")
CheckpointOption = typer.Option(10, help="Save a resumable training checkpoint every N steps.")
DeviceOption = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available).")


def _progress_callbacks(out: Console):
    """A training progress bar with ETA on a terminal; plain silence otherwise."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=out, disable=not out.is_terminal, transient=True,
    )
    state = {}

    def on_step(record: dict, total: int) -> None:
        if "task" not in state:
            progress.start()
            state["task"] = progress.add_task("training", total=total or None, loss="-")
        loss = record.get("loss")
        progress.update(state["task"], completed=record["step"], loss=f"{loss:.4f}" if loss is not None else "-")
        if total and record["step"] >= total:
            progress.stop()

    return on_step, progress


def _execute(prepared_runs, store, options, out: Console) -> dict[str, str]:
    from metalora.runner import execute_run

    outcomes = {}
    for index, prepared in enumerate(prepared_runs, start=1):
        out.print(f"[{index}/{len(prepared_runs)}] {describe(prepared.config)} -> {prepared.run_id}", highlight=False)
        on_step, progress = _progress_callbacks(out)
        try:
            outcomes[prepared.run_id] = execute_run(
                prepared, store, options, report=lambda line: out.print("  " + line, highlight=False), on_step=on_step
            )
        finally:
            progress.stop()
        if outcomes[prepared.run_id] != "done":
            out.print(f"  {outcomes[prepared.run_id]}: " + (
                "already finished, not redone" if outcomes[prepared.run_id] == "skipped" else "another worker has it"
            ), highlight=False)
    return outcomes


def describe(config) -> str:
    if not config.trains:
        return f"base model {config.model}"
    return f"{config.method} shots={config.shots} seed={config.train.seed} ({config.profile})"


def _default_profile(device: str | None, profile: str | None, out: Console) -> str:
    from metalora.models import pick_device
    from metalora.runconfig import PROFILES

    if profile:
        return profile
    if pick_device(device) == "cpu":
        out.print(f"CPU only: using the 'quick' profile ({PROFILES['quick'].description}); "
                  "pass --profile full for the full protocol.", highlight=False)
        return "quick"
    return "full"


@app.command()
@user_errors
def run(
    method: str = typer.Option("metalora", help="base | lora | hydralora | metalora"),
    shots: str = typer.Option("50", help="Examples per task: 10..100, or 'full'."),
    model: str = typer.Option("smollm2-135m", help="Alias, hub id, local HF folder or .gguf file."),
    scenario: str = typer.Option("multitask", help="multitask | multilingual"),
    tasks: str | None = typer.Option(None, help="Comma-separated training tasks (default: the scenario's)."),
    held_out_languages: str | None = typer.Option(None, help="multilingual: XCOPA languages never trained on."),
    full_cap: int | None = typer.Option(None, help="Cap per task for --shots full (default 1000)."),
    seed: int = typer.Option(0, help="Seed for budgets, initialisation and sampling."),
    profile: str | None = typer.Option(None, help="full | quick | smoke (default: quick on CPU, full on GPU)."),
    rank: int | None = typer.Option(None, help="LoRA rank (16)."),
    alpha: float | None = typer.Option(None, help="LoRA alpha (32)."),
    dropout: float | None = typer.Option(None, help="LoRA dropout (0.05)."),
    target_modules: str | None = typer.Option(None, help="Comma-separated module names (gate_proj,up_proj,down_proj)."),
    steps: int | None = typer.Option(None, help="Optimizer steps / meta-iterations (100)."),
    epochs: float | None = typer.Option(None, help="Train for this many passes over the budgets instead of --steps."),
    lr: float | None = typer.Option(None, help="Learning rate; the outer rate beta for metalora (2e-4)."),
    weight_decay: float | None = typer.Option(None, help="AdamW weight decay (0)."),
    lr_schedule: str | None = typer.Option(None, help="constant | linear | cosine"),
    warmup_steps: int | None = typer.Option(None, help="Warm-up steps (0)."),
    batch_size: int | None = typer.Option(None, help="Training batch size for lora/hydralora (8)."),
    max_seq_len: int | None = typer.Option(None, help="Longest training sequence in tokens (512)."),
    inner_steps: int | None = typer.Option(None, help="metalora: k inner SGD steps (3)."),
    support_size: int | None = typer.Option(None, help="metalora: n_s support examples per task (8)."),
    query_size: int | None = typer.Option(None, help="metalora: n_q query examples per task (8)."),
    inner_lr: float | None = typer.Option(None, help="metalora: inner SGD rate alpha (1e-2)."),
    tasks_per_iteration: int | None = typer.Option(None, help="metalora: tasks per meta-iteration (all)."),
    variant: str | None = typer.Option(None, help="metalora: first_order | second_order | reptile | phase1_only | phase2_only"),
    outer_optimizer: str | None = typer.Option(None, help="metalora: adamw | sgd"),
    num_heads: int | None = typer.Option(None, help="hydralora: number of B heads (4)."),
    benchmarks: str | None = typer.Option(None, help="Comma-separated: bbh,bbh_cot,bbh_mc,mmlu,mmlu_5shot,xcopa,xwinograd,mgsm."),
    eval_limit: int | None = typer.Option(None, help="Evaluate only the first N items of each task."),
    max_gen_tokens: int | None = typer.Option(None, help="Cap on generated tokens (generative benchmarks)."),
    eval_batch_size: str = typer.Option("8", help="Evaluation batch size, or 'auto'."),
    checkpoint_every: int = CheckpointOption,
    device: str | None = DeviceOption,
    dtype: str | None = typer.Option(None, help="auto | float32 | bfloat16 | float16 (auto: fp32 on CPU, bf16 on GPU)."),
    store: Path | None = StoreOption,
    data_root: str | None = DataRootOption,
):
    """Train one adapter, evaluate it, store the run and print a summary.

    Example: mlbench run --method metalora --shots 50
    """
    given = dict(locals())
    from metalora.runconfig import build_run_config
    from metalora.runner import prepare_run
    from metalora.store import RunStore

    out = console()
    options = {key: value for key, value in given.items()
               if key not in ("store", "data_root", "device", "eval_batch_size", "checkpoint_every")
               and value is not None}
    options["profile"] = _default_profile(device, profile, out)
    config = build_run_config(options)
    prepared = prepare_run(config, data_root, device)
    run_store = RunStore(store)
    _execute([prepared], run_store, _execution(device, eval_batch_size, checkpoint_every), out)
    show(prepared.run_id, store=store)


def _execution(device: str | None, eval_batch_size: str, checkpoint_every: int):
    from metalora.runner import ExecutionOptions

    if checkpoint_every < 1:
        raise MlbenchError(f"--checkpoint-every must be a positive number of steps, got {checkpoint_every}")
    if eval_batch_size != "auto":
        try:
            eval_batch_size = int(eval_batch_size)
        except ValueError:
            raise MlbenchError(f"--eval-batch-size must be a positive integer or 'auto', got {eval_batch_size!r}") from None
    return ExecutionOptions(device=device, eval_batch_size=eval_batch_size, checkpoint_every=checkpoint_every)


@app.command()
@user_errors
def sweep(
    config: Path = typer.Argument(..., help="Sweep YAML (see configs/)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and what is already done; run nothing."),
    profile: str | None = typer.Option(None, help="Override every run's profile (e.g. smoke on CPU)."),
    eval_batch_size: str = typer.Option("8", help="Evaluation batch size, or 'auto'."),
    checkpoint_every: int = CheckpointOption,
    device: str | None = DeviceOption,
    store: Path | None = StoreOption,
    data_root: str | None = DataRootOption,
):
    """Run every run of a grid that is not done yet. Safe to restart, and to run twice at once.

    Example: mlbench sweep configs/table2.yaml --dry-run
    """
    from metalora.store import RunStore
    from metalora.sweep import load_sweep, prepare_sweep

    out = console()
    plan = prepare_sweep(load_sweep(config, {"profile": profile} if profile else None), data_root, device)
    run_store = RunStore(store)
    done = [p for p in plan if run_store.is_done(p.run_id)]
    out.print(f"{config}: {len(plan)} runs, {len(done)} already done, {len(plan) - len(done)} to run", highlight=False)
    if dry_run:
        for prepared in plan:
            status = "done" if run_store.is_done(prepared.run_id) else "to run"
            print(f"{prepared.run_id}  {status:7s}  {describe(prepared.config)}")
        return
    outcomes = _execute(plan, run_store, _execution(device, eval_batch_size, checkpoint_every), out)
    busy = [run_id for run_id, outcome in outcomes.items() if outcome == "busy"]
    out.print(f"finished: {sum(o == 'done' for o in outcomes.values())} run now, "
              f"{sum(o == 'skipped' for o in outcomes.values())} already done, {len(busy)} held by another worker",
              highlight=False)


@app.command("ls")
@user_errors
def list_runs(store: Path | None = StoreOption):
    """List runs with status and headline metrics. Example: mlbench ls --store runs"""
    from metalora.store import RunStore

    rows = RunStore(store).rows()
    if not rows:
        print("no runs yet")
        return
    table = Table("run", "status", "method", "model", "shots", "seed", "profile", "headline")
    for row in rows:
        headline = "  ".join(f"{k}={v:.4f}" for k, v in row.headline.items())
        table.add_row(row.run_id, row.status, row.method or "", row.model or "", row.shots or "-",
                      "-" if row.seed is None or row.method == "base" else str(row.seed), row.profile or "", headline)
    Console(width=200).print(table)


@app.command()
@user_errors
def show(run_id: str = typer.Argument(..., help="A run id or a unique prefix of one."), store: Path | None = StoreOption):
    """Print one run: configuration, environment, metrics. Example: mlbench show 3fa2"""
    from metalora.runner import read_run
    from metalora.store import RunStore

    run_store = RunStore(store)
    record = read_run(run_store, run_store.find(run_id))
    out = Console(width=200)
    config = (record["config"] or {}).get("config", {})
    out.print(f"run {record['run_id']}  ({'done' if record['done'] else 'not finished'})  {record['folder']}", highlight=False)
    out.print(json.dumps(config, indent=2), highlight=False)
    if record["env"]:
        env = record["env"]
        out.print(f"code {env.get('code_revision')}{' (dirty)' if env.get('code_dirty') else ''}; device {env.get('device')}; "
                  f"model {env.get('model_source', {}).get('identity')}", highlight=False)
    if record["training_log"]:
        losses = [r["loss"] for r in record["training_log"] if r.get("loss") is not None]
        out.print(f"training: {len(record['training_log'])} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}", highlight=False)
    results = record["results"]
    if results:
        table = Table("benchmark", "aggregate", "metric", "value", "stderr", "items")
        for agg in results["aggregates"]:
            if agg["name"] in ("macro", "micro"):
                stderr = "-" if agg["stderr"] is None else f"{agg['stderr']:.4f}"
                table.add_row(agg["benchmark"], agg["name"], agg["metric"], f"{agg['value']:.4f}", stderr, str(agg["n_items"]))
        out.print(table)


@app.command()
@user_errors
def models():
    """List the built-in model aliases and where each would load from. Example: mlbench models"""
    from metalora.models import MODEL_ALIASES, describe_alias

    for name, alias in MODEL_ALIASES.items():
        print(f"{name}: {alias.description}")
        for place, state in describe_alias(name):
            print(f"  {place}: {state}")
    print("Any hub id, local HF model folder or .gguf file works too (--model).")


@data_app.command("check")
@user_errors
def data_check(data_root: str | None = DataRootOption):
    """Verify the data root against its SHA256SUMS, parse every training and benchmark file, and
    list item counts read from the data.

    Example: mlbench data check --data-root ../shared/data
    """
    from eval_tasks.datacheck import evaluated_item_counts
    from eval_tasks.registry import BENCHMARKS
    from metalora.data.checks import verify_checksums
    from metalora.data.registry import TRAINING_TASKS
    from metalora.data.root import resolve_data_root

    root = resolve_data_root(data_root, allow_hub=False)
    checked, bad = verify_checksums(root.path)
    if bad:
        raise MlbenchError(f"{len(bad)} of {checked} files in {root.path} do not match SHA256SUMS, e.g. {bad[0]}")
    print(f"{root.path}: {checked} files match SHA256SUMS")
    problems = []
    print("training tasks (training pool / held-out items, read from the data):")
    for name, spec in TRAINING_TASKS.items():
        try:
            split = spec.load(root)
        except MlbenchError as error:
            problems.append(str(error))
            print(f"  {name:32s} unreadable: {error}")
            continue
        print(f"  {name:32s} {len(split.train):6d} / {len(split.held_out):6d}")
    print("benchmarks (evaluated items read from the data; official count where it differs):")
    for name, spec in BENCHMARKS.items():
        try:
            counts = evaluated_item_counts(spec, root)
        except MlbenchError as error:
            problems.append(str(error))
            print(f"  {name:32s} unreadable: {error}")
            continue
        total = sum(counts.values())
        note = "" if total == spec.total_items else f"  (official: {spec.total_items})"
        print(f"  {name:32s} {total:6d} in {len(counts)} tasks{note}")
    if problems:
        raise MlbenchError(f"{len(problems)} task(s) or benchmark(s) cannot be read, first: {problems[0]}")


@app.command()
@user_errors
def report(
    store: Path | None = StoreOption,
    out: Path = typer.Option(Path("site"), "--out", help="Output folder for the static site."),
):
    """Build the static HTML leaderboard and report from the run store. Example: mlbench report --out site"""
    from reports.output import existing_store
    from reports.site import build_report

    index = build_report(existing_store(store), out)
    print(f"report written to {index}")


if __name__ == "__main__":
    app()
