"""One run from config to stored result: check, hash, claim, train (resumable), evaluate, finish.

``build_run_config`` (runconfig) has validated every value; ``prepare_run`` adds what needs the
data (the data root, each task's budget, the method's checks on the budgets, the number of updates
under the budget rule, the data hashes and so the run id), all before any model is loaded. A run whose ``DONE`` exists is never retrained: asked
for benchmarks or items it lacks, it is only evaluated (``metalora.runs.evaluation``); a run
interrupted in training resumes from its checkpoint, and one interrupted after training reuses
its saved adapter.

``execute_runs`` is the entry point of a worker (``mlbench run``/``sweep``, and every process a
multi-GPU or cluster launcher starts): one ``Worker`` for the whole list, so the base model is
loaded once per model and the benchmarks' tasks are built once, and each run only attaches,
trains and detaches its adapter (``metalora.runs.worker``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from metalora.data.budgets import TaskBudget, load_budgets
from metalora.data.registry import TaskSplit, get_task
from metalora.data.root import DataRoot, resolve_data_root
from metalora.errors import MlbenchError
from metalora.methods import adapter_kinds, get_method
from metalora.models import base_model_reference, model_identity, pick_device, pick_dtype
from metalora.provenance import FileHashCache, environment_record
from metalora.runs import store as files
from metalora.runs.evaluation import (
    EvalPlan,
    EvalRequest,
    evaluation_data_hashes,
    evaluation_lock,
    pending_folder,
    plan_evaluation,
    store_evaluation,
    stored_results,
)
from metalora.runs.meter import RunMeter
from metalora.runs.runconfig import ExecutionOptions, RunConfig, differs_from_defaults, run_id_for
from metalora.runs.store import RunStore
from metalora.runs.tracking import Tracker, open_tracker
from metalora.training.adapters import PEFT_FILES, NoAdapter, load_adapter, no_peft_format
from metalora.training.budget import BudgetPlan
from metalora.training.checkpoint import FolderCheckpointer
from metalora.training.preflight import (
    check_sequence_length,
    check_target_modules,
    config_linear_names,
    folder_tokenizer,
    linear_module_names,
)
from metalora.training.trainer import check_budgets, preserve_requires_grad


@dataclass(frozen=True)
class PreparedRun:
    config: RunConfig  # dtype resolved for the device
    run_id: str
    root: DataRoot
    budgets: tuple[TaskBudget, ...]  # empty for the base model
    data_hashes: dict[str, str]
    model_identity: str  # sha256 of the weights, checked again when the model loads
    budget: BudgetPlan | None = None  # updates and passes under the budget rule; None for the base model


def training_data_hashes(config: RunConfig, root: DataRoot, hasher: Callable[[Path], str]) -> dict[str, str]:
    """sha256 of every file training reads: these, not the evaluation's, enter the run id."""
    files_read = [name for task in (config.tasks if config.trains else ()) for name in get_task(task).files]
    if root.is_hub:
        return {f"hub:{name}": "hub" for name in dict.fromkeys(files_read)}
    return {name: hasher(root.file(name)) for name in dict.fromkeys(files_read)}


def data_hashes_for(config: RunConfig, root: DataRoot, hasher: Callable[[Path], str]) -> dict[str, str]:
    """Every file the run reads, training's and the evaluation's (recorded in config.json)."""
    return training_data_hashes(config, root, hasher) | evaluation_data_hashes(
        config.benchmarks, config.tasks, root, hasher
    )


class DataCache:
    """What preparing many runs can share (a sweep's dry run prepares every run): file hashes,
    each task's parsed split and the benchmark files already parsed, so every
    data file is read once per sweep, not once per run."""

    def __init__(self):
        self.hasher = FileHashCache()
        self._splits: dict[tuple[DataRoot, str], TaskSplit] = {}
        self._checked: set[tuple[DataRoot, tuple[str, ...], tuple[str, ...]]] = set()
        self._hub_checked = False

    def check_hub(self) -> None:
        """With no data root every file comes from the hub: an unusable hub is named now, before
        any model loads, not after the training when the first benchmark is built."""
        from metalora.data.hub import hub_unavailable_reason

        if not self._hub_checked:
            reason = hub_unavailable_reason()
            if reason:
                raise MlbenchError(
                    f"no data root is set and the hub is unreachable ({reason}): pass --data-root DIR or set "
                    "MLBENCH_DATA_DIR to a local mirror laid out like shared/data (README: Data)"
                )
            self._hub_checked = True

    def split(self, root: DataRoot, task: str) -> TaskSplit:
        if (root, task) not in self._splits:
            self._splits[(root, task)] = get_task(task).load(root)
        return self._splits[(root, task)]

    def check_benchmarks(self, root: DataRoot, benchmarks: tuple[str, ...], tasks: tuple[str, ...]) -> None:
        from eval_tasks.datacheck import check_benchmark_data
        from eval_tasks.registry import training_task_subtasks

        if (root, benchmarks, tasks) not in self._checked:
            check_benchmark_data(benchmarks, root, training_task_subtasks(benchmarks, tasks))
            self._checked.add((root, benchmarks, tasks))


def prepare_run(
    config: RunConfig, execution: ExecutionOptions | None = None, cache: DataCache | None = None
) -> PreparedRun:
    """The checks that need data, and the run id; no model is loaded, nothing is written."""
    execution = execution or ExecutionOptions()
    cache = cache or DataCache()
    config = replace(config, dtype=pick_dtype(config.dtype, pick_device(execution.device)))
    root = resolve_data_root(execution.data_root)
    if root.is_hub:
        cache.check_hub()
    model = model_identity(config.model)  # also checks the model's files (or the hub) before anything loads
    budgets: tuple[TaskBudget, ...] = ()
    budget = None
    if config.trains:
        budgets = tuple(load_budgets(root, config.tasks, config.shots, config.train.seed, config.full_cap,
                                     load_split=lambda task: cache.split(root, task)))
        check_budgets(config.options, budgets)
        # Refuses a budget rule that would leave any budget example unseen.
        budget = get_method(config.method).plan_budget(config.options, config.train, budgets)
        if Path(config.model).expanduser().is_dir():
            # A local folder: its config.json tells the layers and its tokenizer the lengths, so
            # both are checked here, without reading any weights (else after loading, see execute_run).
            names = config_linear_names(config.model)
            if names is not None:
                check_target_modules(names, config.train.target_modules, config.model)
            tokenizer = folder_tokenizer(config.model)
            if tokenizer is not None:
                check_sequence_length(tokenizer, budgets, config.train.max_seq_len)
    hashes = data_hashes_for(config, root, cache.hasher)
    # Every evaluation file is parsed now, so a malformed one fails before the training, not after.
    cache.check_benchmarks(root, tuple(config.benchmarks), tuple(config.tasks))
    run_id = run_id_for(config, training_data_hashes(config, root, cache.hasher), model)
    return PreparedRun(config, run_id, root, budgets, hashes, model, budget)


def evaluation_request(config: RunConfig, force: bool = False) -> EvalRequest:
    return EvalRequest(tuple(config.benchmarks), tuple(config.tasks), config.eval_limit, config.max_gen_tokens, force)


@dataclass(frozen=True)
class PreparedEvaluation:
    """A finished run to evaluate further: everything checked, no model loaded, nothing written."""

    run_id: str
    method: str
    model: str
    dtype: str
    model_identity: str  # the weights it was trained on
    request: EvalRequest
    root: DataRoot
    data_files: dict[str, str]  # current hashes of the requested benchmarks' files
    plan: EvalPlan


def prepare_evaluation(
    store: RunStore,
    run_id: str,
    benchmarks: tuple[str, ...] = (),
    *,
    eval_limit: int | None = None,
    max_gen_tokens: int | None = None,
    force: bool = False,
    execution: ExecutionOptions | None = None,
    cache: DataCache | None = None,
) -> PreparedEvaluation:
    """``mlbench eval``: check a finished run, the benchmarks and the model before any work.
    Options left None keep the run's own (its benchmarks, eval_limit, max_gen_tokens); an
    ``eval_limit`` of 0 means every item."""
    from eval_tasks.registry import get_benchmark

    execution = execution or ExecutionOptions()
    cache = cache or DataCache()
    record = store.record(run_id)
    if record.finished is None:
        raise MlbenchError(
            f"run {run_id} is not finished ({record.status}); finish it with 'mlbench run' or 'mlbench sweep' "
            "first, then evaluate it"
        )
    config = record.config
    benchmarks = tuple(dict.fromkeys(benchmarks or config.get("benchmarks") or ()))
    if not benchmarks:
        raise MlbenchError("no benchmark to evaluate; name some with --benchmarks, e.g. bbh,mmlu")
    for name in benchmarks:
        get_benchmark(name)
    for key, value in (("eval_limit", eval_limit), ("max_gen_tokens", max_gen_tokens)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise MlbenchError(f"{key} must be a positive integer (0: no limit), got {value!r}")
    limit = config.get("eval_limit") if eval_limit is None else (eval_limit or None)
    cap = config.get("max_gen_tokens") if max_gen_tokens is None else (max_gen_tokens or None)
    request = EvalRequest(benchmarks, tuple(config.get("tasks") or ()), limit, cap, force)
    method = get_method(str(config.get("method")))
    if method.trains and not (record.path / files.ADAPTER_DIR / "adapter.json").is_file():
        raise MlbenchError(f"run {run_id} has no saved adapter in {record.path / files.ADAPTER_DIR}; run it again")
    root = resolve_data_root(execution.data_root)
    cache.check_benchmarks(root, benchmarks, request.tasks)
    data_files = evaluation_data_hashes(benchmarks, request.tasks, root, cache.hasher)
    identity = model_identity(str(config.get("model")))
    trained_on = (record.env.get("model_source") or {}).get("identity") or identity
    if identity != trained_on:
        raise MlbenchError(
            f"the weights of {config.get('model')} changed since run {run_id} was trained ({trained_on} -> "
            f"{identity}); evaluate it with the model it was trained on"
        )
    return PreparedEvaluation(run_id, method.name, str(config["model"]), str(config.get("dtype", "auto")), identity,
                              request, root, data_files, plan_evaluation(record.results, request, data_files))


def headline_metrics(results: dict) -> dict[str, float]:
    """Each benchmark's macro average of its primary metric."""
    from eval_tasks.registry import get_benchmark

    headline = {}
    for benchmark in results["benchmarks"]:
        primary = get_benchmark(benchmark).metrics[0]
        for aggregate in results["aggregates"]:
            if aggregate["benchmark"] == benchmark and aggregate["name"] == "macro" and aggregate["metric"] == primary:
                headline[f"{benchmark}/{primary}"] = aggregate["value"]
    return headline


Reporter = Callable[[str], None]
StepReporter = Callable[[dict, int], None]
BenchmarkReporter = Callable[[str, "dict | None"], None]


@dataclass(frozen=True)
class RunHooks:
    """Where one run reports: the runner's lines, each training step, each benchmark's start
    (timing None) and end (the CLI's progress display)."""

    report: Reporter
    on_step: StepReporter | None = None
    on_benchmark: BenchmarkReporter | None = None


# Per run: a context around it that yields the run's hooks (None: the list's ``report`` only).
AroundRun = Callable[[int, int, PreparedRun], AbstractContextManager]
OUTCOME_LINES = {"skipped": "skipped: already finished, not redone", "busy": "busy: another worker has it"}


@dataclass
class _Work:
    """Whether a claimed run has done any work: trained (begun now, or a checkpoint, log or adapter
    of an earlier attempt) or evaluated (a benchmark begun, or results of an earlier attempt). A
    run that fails before any (its weights changed, its evaluation data vanished, a logger would not
    start) leaves nothing in the store: the failure is its setting's, said on the terminal."""

    folder: Path
    started: bool = False

    def begin(self) -> None:
        self.started = True

    def any(self) -> bool:
        kept = (files.CHECKPOINT_DIR, files.TRAINING_LOG_FILE, files.ADAPTER_DIR, files.RESULTS_FILE)
        return self.started or any((self.folder / name).exists() for name in kept)


def failure_reason(error: BaseException) -> str:
    """One line saying why a run failed: a user-facing error as it is, anything else with its type."""
    return str(error) if isinstance(error, MlbenchError) else f"{type(error).__name__}: {error}"


def execute_runs(
    prepared_runs: Sequence[PreparedRun],
    store: RunStore,
    options: ExecutionOptions | None = None,
    *,
    report: Reporter = lambda line: None,
    around_run: AroundRun | None = None,
    worker=None,
    keep_going: bool = False,
    on_outcome: Callable[[PreparedRun, str], None] | None = None,
) -> dict[str, str]:
    """Execute runs one after another in this process; returns run id -> outcome (``execute_run``).

    With ``keep_going`` (a sweep) a run that fails (diverged training, a kernel error) is recorded
    as failed in the store with its reason, reported, and the next run starts: every run of a sweep
    was validated before the first one started, so one run's failure says nothing about the others.
    Its outcome is "failed". Ctrl-C still stops the whole list.

    One ``Worker`` (``metalora.runs.worker``; a new one unless given) serves the whole list, so
    the base model stays loaded between runs of the same model and tasks are built once.
    ``around_run`` wraps each run and yields its ``RunHooks``; ``on_outcome`` sees each run's
    outcome once its context has closed.
    """
    from metalora.runs.worker import Worker

    worker = worker or Worker()
    outcomes = {}
    for index, prepared in enumerate(prepared_runs, start=1):
        context = around_run(index, len(prepared_runs), prepared) if around_run else nullcontext()
        with context as hooks:
            hooks = hooks or RunHooks(report)
            try:
                outcome = execute_run(prepared, store, options, report=hooks.report, on_step=hooks.on_step,
                                      worker=worker, on_benchmark=hooks.on_benchmark)
            except Exception as error:  # execute_run has stored the failure and its reason
                if not keep_going:
                    raise
                outcome = "failed"
                hooks.report(f"failed: {failure_reason(error)}")
        outcomes[prepared.run_id] = outcome
        if outcome in OUTCOME_LINES:
            report(OUTCOME_LINES[outcome])
        if on_outcome is not None:
            on_outcome(prepared, outcome)
    return outcomes


def execute_run(
    prepared: PreparedRun,
    store: RunStore,
    options: ExecutionOptions | None = None,
    *,
    report: Reporter = lambda line: None,
    on_step: StepReporter | None = None,
    worker=None,
    on_benchmark: Callable[[str, dict | None], None] | None = None,
) -> str:
    """Run it; returns "done" (finished now), "evaluated" (a finished run only evaluated on what it
    lacked), "skipped" (already done) or "busy" (another worker).

    ``worker`` (a ``metalora.runs.worker.Worker``) is what a process running many runs shares
    between them: the loaded base model and the built evaluation tasks. ``on_benchmark`` sees each
    benchmark start and end (progress display)."""
    from metalora.runs.worker import ModelKey, Worker

    options = options or ExecutionOptions()
    worker = worker or Worker(reuse_model=False)
    run_id, config = prepared.run_id, prepared.config
    if store.is_done(run_id):
        request = evaluation_request(config)
        plan = plan_evaluation(stored_results(store.run_dir(run_id)), request, prepared.data_hashes)
        if not plan.evaluate:
            return "skipped"
        evaluation = PreparedEvaluation(run_id, config.method, config.model, config.dtype, prepared.model_identity,
                                        request, prepared.root, prepared.data_hashes, plan)
        return execute_evaluation(evaluation, store, options, report=report, worker=worker, on_benchmark=on_benchmark)
    if store.holder(run_id) is not None:
        return "busy"  # another live worker runs it: no model is loaded for nothing
    device = pick_device(options.device)
    meter = RunMeter(device)
    with meter.phase("model_load"):  # next to nothing when the worker kept the model from its last run
        loaded, reused = _lend_model(worker, config.model, ModelKey(prepared.model_identity, config.dtype, device),
                                     report, run_id)
    try:
        if config.trains:
            # What needs the loaded model is checked before the claim: a refusal leaves no run behind.
            check_target_modules(linear_module_names(loaded.model), config.train.target_modules, config.model)
            check_sequence_length(loaded.tokenizer, prepared.budgets, config.train.max_seq_len)
        if not store.claim(run_id, config.to_dict()):
            return "skipped" if store.is_done(run_id) else "busy"
        folder = store.run_dir(run_id)
        work = _Work(folder)
        try:
            tracker = open_tracker(options.log_to, run_id, folder, config.to_dict())
            try:
                with store.holding(run_id):
                    _execute_claimed(prepared, store, folder, options, loaded, report, on_step, worker.task_cache,
                                     tracker, reused, meter, on_benchmark, work)
            finally:
                if tracker is not None:
                    tracker.close()
        except (KeyboardInterrupt, SystemExit):
            store.release(run_id)  # interrupted, not failed: the next run resumes it
            raise
        except BaseException as error:
            try:
                if not work.any():
                    store.discard(run_id)  # failed before any work: no folder, no index row
            except MlbenchError:  # it could not be deleted: it stays, as a failed run
                pass
            if store.run_dir(run_id).is_dir():
                store.fail(run_id, failure_reason(error))
            raise
    except BaseException:
        worker.models.release()  # a run that stopped half-way may have left its adapter attached
        raise
    return "done"


def _lend_model(worker, name: str, key, report: Reporter, run_id: str):
    """The worker's loaded model for ``key`` (loaded now, or kept from an earlier run and verified)."""
    report(f"loading model {name} on {key.device} ({key.dtype})")
    started = time.perf_counter()
    loaded, reused = worker.models.get(name, key)
    report(f"model loaded in {time.perf_counter() - started:.1f} s"
           + (" (kept from an earlier run of this worker, verified unchanged)" if reused else ""))
    return loaded, reused


def _items(limit: int | None) -> str:
    return f" (first {limit} item{'s' if limit > 1 else ''} of each task)" if limit else ""


def _execute_claimed(prepared, store, folder: Path, options, loaded, report, on_step, task_cache=None,
                     tracker: Tracker | None = None, reused: bool = False, meter: RunMeter | None = None,
                     on_benchmark=None, work: _Work | None = None) -> None:
    meter = meter or RunMeter(loaded.device)
    work = work or _Work(folder)
    run_id, config = prepared.run_id, prepared.config

    def benchmark_event(name: str, timing: dict | None) -> None:
        work.begin()  # a benchmark begins: the run is working
        if on_benchmark is not None:
            on_benchmark(name, timing)

    if not (folder / files.CONFIG_FILE).is_file():
        files.write_config(folder, run_id, config.to_dict(), prepared.data_hashes, prepared.root.describe(),
                           differs_from_defaults=differs_from_defaults(config))
    if loaded.source.identity != prepared.model_identity:
        raise MlbenchError(f"the weights of {config.model} changed after run {run_id} was planned; run it again")
    environment = environment_record(loaded.device) | {
        "dtype": loaded.dtype,
        "model_source": loaded.source.to_dict(),
        "eval_batch_size": options.eval_batch_for(loaded.device),
        "eval_decode_rows": options.decode_rows_for(loaded.device),
        "eval_backend": options.eval_backend,
        "eval_shapes": options.eval_shapes,
        "eval_cuda_graphs": options.eval_cuda_graphs,
        "eval_merge_lora": options.eval_merge_lora,
        "base_model_reused": reused,  # kept loaded from an earlier run of this worker (verified unchanged)
    }
    files.write_env(folder, environment)

    adapter_dir = folder / files.ADAPTER_DIR
    if config.trains and (adapter_dir / "adapter.json").is_file():
        report("reusing the trained adapter")
        adapter = load_adapter(adapter_dir, adapter_kinds())
    elif config.trains:
        total = prepared.budget.updates if prepared.budget else 0
        every_steps, every_s = options.checkpoint_schedule()
        checkpointer = FolderCheckpointer(folder / files.CHECKPOINT_DIR, every_steps, every_s)
        resumed = checkpointer.load()
        if resumed is not None:
            report(f"resuming training after step {resumed.step}")

        def step_callback(record: dict) -> None:
            if on_step:
                on_step(record, total)
            if tracker is not None:
                tracker.log_step(record)

        trainer = get_method(config.method).trainer(config.options)
        work.begin()
        with meter.phase("training"):
            adapter = trainer.fit(loaded.model, loaded.tokenizer, prepared.budgets, config.train, step_callback,
                                  checkpointer)
        meter.count_training(adapter.training_log, after_step=resumed.step if resumed is not None else 0)
        files.write_training_log(folder, adapter.training_log)
        # before the adapter: a run that finds its adapter saved also finds what training cost
        if adapter.training_cost is not None:
            files.write_cost(folder, {"training": adapter.training_cost})
        adapter.save(adapter_dir)
        checkpointer.clear()
    else:
        adapter = NoAdapter({}, {})
        meter.phases["training"] = 0.0  # the base model trains nothing
    if config.trains and adapter.peft_format and not (folder / files.PEFT_DIR).is_dir():
        adapter.export_peft(folder / files.PEFT_DIR, base_model_reference(loaded.source.to_dict()),
                            loaded.source.identity)

    request = evaluation_request(config)
    plan = plan_evaluation(stored_results(folder), request, prepared.data_hashes)
    if plan.evaluate:
        report(f"evaluating on {', '.join(plan.evaluate)}{_items(config.eval_limit)}")
        _evaluate_into(folder, run_id, adapter, loaded, request, plan, prepared.root, options, task_cache, meter,
                       benchmark_event)
    results = json.loads((folder / files.RESULTS_FILE).read_text())
    files.write_cost(folder, meter.sections())
    store.finish(run_id, headline_metrics(results))
    if tracker is not None:
        tracker.log_metrics(headline_metrics(results), _last_step(folder))


def _last_step(folder: Path) -> int:
    """The run's last training step (0 untrained): where its final metrics are logged."""
    log = folder / files.TRAINING_LOG_FILE
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()] if log.is_file() else []
    return int(json.loads(lines[-1])["step"]) if lines else 0


def _evaluate_into(folder: Path, run_id: str, adapter, loaded, request: EvalRequest, plan: EvalPlan, root: DataRoot,
                   options: ExecutionOptions, task_cache, meter: RunMeter | None = None, on_benchmark=None) -> dict:
    """Evaluate ``plan.evaluate`` and commit the results to the run folder (evaluation.py);
    ``meter`` gets each benchmark's wall time and items/s."""
    stored = stored_results(folder)
    with pending_folder(folder) as pending, preserve_requires_grad(loaded.model):
        # Attaching freezes the base; the flags and the modules are given back as loaded.
        model = adapter.attach(loaded.model)
        options = replace(options, eval_batch_size=options.eval_batch_for(loaded.device),
                          eval_decode_rows=options.decode_rows_for(loaded.device))
        try:
            result = _evaluate(model, loaded.tokenizer, adapter, request, plan, root, options, pending, run_id,
                               task_cache, on_benchmark)
        finally:
            adapter.detach(model)
        if meter is not None:
            meter.eval_timing = dict(result.settings.get("timing") or {})
        return store_evaluation(folder, stored, json.loads(result.to_json()), pending, request)


def _evaluate(model, tokenizer, adapter, request: EvalRequest, plan: EvalPlan, root: DataRoot,
              options: ExecutionOptions, pending: Path, run_id: str, task_cache, on_benchmark=None):
    from eval_tasks.harness import evaluate

    return evaluate(
        model,
        tokenizer,
        list(plan.evaluate),
        data_root=root,
        batch_size=options.eval_batch_size,
        limit=request.eval_limit,
        max_gen_tokens=request.max_gen_tokens,
        output_dir=pending,
        run_label=run_id,
        merge_lora=adapter.mergeable and options.eval_merge_lora == "on",
        subtasks=request.subtasks(plan.evaluate),
        eval_backend=options.eval_backend,
        task_cache=task_cache,
        on_benchmark=on_benchmark,
        decode_rows=options.eval_decode_rows,
        eval_shapes=options.eval_shapes,
        cuda_graphs=options.eval_cuda_graphs == "auto",
    )


def execute_evaluation(
    prepared: PreparedEvaluation,
    store: RunStore,
    options: ExecutionOptions | None = None,
    *,
    report: Reporter = lambda line: None,
    worker=None,
    on_benchmark: Callable[[str, dict | None], None] | None = None,
) -> str:
    """Evaluate a finished run on what its plan lacks, with its saved adapter (never retrained).
    Returns "evaluated", "skipped" (nothing left to do) or "busy" (another worker evaluates it)."""
    from metalora.runs.worker import ModelKey, Worker

    options = options or ExecutionOptions()
    worker = worker or Worker(reuse_model=False)
    run_id, folder = prepared.run_id, store.run_dir(prepared.run_id)
    with evaluation_lock(folder) as mine:
        if not mine:
            return "busy"
        # Planned again under the lock: another worker may have added these benchmarks meanwhile.
        plan = plan_evaluation(stored_results(folder), prepared.request, prepared.data_files)
        if not plan.evaluate:
            return "skipped"
        device = pick_device(options.device)
        report(f"evaluation only, the saved adapter is not retrained: {plan.describe()}")
        key = ModelKey(prepared.model_identity, prepared.dtype, device)
        loaded, _ = _lend_model(worker, prepared.model, key, report, run_id)
        if loaded.source.identity != prepared.model_identity:
            raise MlbenchError(f"the weights of {prepared.model} changed since run {run_id} was trained; "
                               "evaluate it with the model it was trained on")
        if get_method(prepared.method).trains:
            adapter = load_adapter(folder / files.ADAPTER_DIR, adapter_kinds())
        else:
            adapter = NoAdapter({}, {})
        report(f"evaluating on {', '.join(plan.evaluate)}{_items(prepared.request.eval_limit)}")
        try:
            results = _evaluate_into(folder, run_id, adapter, loaded, prepared.request, plan, prepared.root, options,
                                     worker.task_cache, on_benchmark=on_benchmark)
        except BaseException:
            worker.models.release()
            raise
        store.update_headline(run_id, headline_metrics(results))
        tracker = open_tracker(options.log_to, run_id, folder, store.record(run_id).config)
        if tracker is not None:
            tracker.log_metrics(headline_metrics(results), _last_step(folder))
            tracker.close()
    return "evaluated"


def export_run(store: RunStore, run_id: str, out: Path | None = None) -> Path:
    """A finished run's adapter in peft's format: ``out``, or the run's own ``adapter/peft``.
    ``out`` must be new, empty, or a peft adapter folder (it is replaced as a whole)."""
    record = store.record(run_id)
    adapter_dir = record.path / files.ADAPTER_DIR
    if not (adapter_dir / "adapter.json").is_file():
        what = "is the untrained base model" if record.method == "base" else "has no saved adapter"
        raise MlbenchError(f"run {run_id} {what}: there is no adapter to export")
    adapter = load_adapter(adapter_dir, adapter_kinds())
    if not adapter.peft_format:
        raise no_peft_format(adapter.kind)
    source = record.env.get("model_source") or {}
    if not source:
        raise MlbenchError(f"run {run_id} has no env.json naming its base model; it cannot be exported")
    target = Path(out) if out is not None else record.path / files.PEFT_DIR
    if target.exists() and (not target.is_dir() or {p.name for p in target.iterdir()} - set(PEFT_FILES)):
        raise MlbenchError(f"{target} exists and holds other files; choose a new or empty folder for --out")
    return adapter.export_peft(target, base_model_reference(source), source.get("identity", ""))
