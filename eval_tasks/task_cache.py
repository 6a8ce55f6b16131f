"""Built lm-eval tasks and their requests, kept in memory across the evaluations of one worker.

lm-eval builds every task from its YAML, loads its data, renders every prompt (a Jinja template
compiled per document) and makes one request per choice, for every run: for MMLU that is 14,042
documents and 56,168 requests, minutes of CPU. A sweep worker evaluates many adapters on the same
benchmarks, so a ``TaskCache`` builds each (benchmark, tasks, data, limit, generation settings)
once and hands later evaluations the same task objects with fresh copies of the same requests.
It also keeps one tokenization memo per tokenizer (``FastLM`` fills it), so each prompt is
tokenized once per worker, and each benchmark's reference rows (``eval_tasks/references.py``
reloads every task's whole data to compute them: on a CPU that took longer than evaluating a
warm ``heldout`` or BBH + MMLU at 1-10 items per task).

How the reuse fits lm-eval: ``lm_eval.evaluator.evaluate`` calls ``task.build_all_requests`` and
then fills each request's responses. A cached task gets that method replaced, on the task object
only, by one that installs copies of the requests built the first time with empty responses.
Everything else (filters, metrics, aggregation, logged samples) is lm-eval's own code on the same
task objects.

The cache is an ordinary object owned by the caller (a worker creates one and passes it to every
``evaluate`` call); nothing is kept at module level.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial

from eval_tasks.dataroot import task_metadata
from eval_tasks.registry import EVAL_TASKS_DIR
from eval_tasks.templates import compiled_once
from metalora.data.root import DataRoot


@dataclass(frozen=True)
class TaskKey:
    """Everything that decides which requests a benchmark makes."""

    benchmark: str
    tasks: tuple[str, ...]  # lm-eval task names
    data_root: str  # where the data came from (hub or a folder)
    data_files: tuple[tuple[str, str], ...]  # (file, sha256) of the files the tasks read
    limit: int | None
    gen_kwargs: str  # JSON of the generation settings given to generative tasks ("" when none)

    @classmethod
    def make(
        cls,
        benchmark: str,
        tasks: Sequence[str],
        data_root: DataRoot,
        data_files: Mapping[str, str],
        limit: int | None,
        gen_kwargs: Mapping | None,
    ) -> TaskKey:
        return cls(
            benchmark=benchmark,
            tasks=tuple(tasks),
            data_root=json.dumps(data_root.describe(), sort_keys=True, default=str),
            data_files=tuple(sorted(data_files.items())),
            limit=limit,
            gen_kwargs=json.dumps(dict(gen_kwargs), sort_keys=True) if gen_kwargs else "",
        )


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    reference_hits: int = 0


class TaskCache:
    """Built tasks and tokenizations for one worker process (see the module docstring)."""

    def __init__(self) -> None:
        self._tasks: dict[TaskKey, dict] = {}
        self._managers: dict[str, object] = {}
        self._encodings: dict[str, dict] = {}
        self._references: dict[TaskKey, dict] = {}
        self._token_texts: dict[str, tuple[str, ...] | None] = {}
        # (id, size, special tokens) -> (the tokenizer, its tokenizer_key): hashing a vocabulary
        # takes 0.2-0.5 s, once per tokenizer object is enough (held here, so its id stays its own).
        self._keys: dict[tuple, tuple[object, str]] = {}
        self.stats = CacheStats()

    def manager(self, data_root: DataRoot):
        """One lm-eval TaskManager per data root (indexing eval_tasks/ takes a while too)."""
        from lm_eval.tasks import TaskManager

        metadata = task_metadata(data_root)
        key = json.dumps(metadata, sort_keys=True)
        if key not in self._managers:
            self._managers[key] = TaskManager(
                include_path=str(EVAL_TASKS_DIR), include_defaults=False, metadata=metadata
            )
        return self._managers[key]

    def tasks(self, key: TaskKey, data_root: DataRoot, gen_kwargs: Mapping | None) -> dict:
        """lm-eval's task dict for ``key``, prepared as ``simple_evaluate`` prepares it and with
        its requests built (once per key)."""
        cached = self._tasks.get(key)
        if cached is not None:
            self.stats.hits += 1
            return cached
        self.stats.misses += 1
        loaded = build_tasks(self.manager(data_root), key.tasks, key.limit, gen_kwargs)
        for task in loaded["tasks"].values():
            requests = tuple(task.instances)
            # Shadows the method on this object only: later evaluations get the same requests.
            task.build_all_requests = partial(_fresh_requests, task, requests)
        self._tasks[key] = loaded
        return loaded

    def references(self, key: TaskKey, compute: Callable[[], dict]) -> dict:
        """A benchmark's reference rows for ``key`` (``compute()`` once per key); a copy each time,
        so a caller's changes never reach the next evaluation."""
        cached = self._references.get(key)
        if cached is None:
            cached = self._references[key] = compute()
        else:
            self.stats.reference_hits += 1
        return copy.deepcopy(cached)

    def encodings(self, tokenizer) -> dict:
        """The string -> token ids memo for ``tokenizer`` (same vocabulary and settings, same memo)."""
        return self._encodings.setdefault(self.tokenizer_key(tokenizer), {})

    def token_texts(self, tokenizer) -> tuple[str, ...] | None:
        """``eval_tasks.stops.token_texts`` of ``tokenizer``, once per vocabulary."""
        from eval_tasks.stops import token_texts

        key = self.tokenizer_key(tokenizer)
        if key not in self._token_texts:
            self._token_texts[key] = token_texts(tokenizer)
        return self._token_texts[key]

    def tokenizer_key(self, tokenizer) -> str:
        """``tokenizer_key``, computed once per tokenizer object while its size and special tokens
        stay as they were."""
        cheap = (id(tokenizer), len(tokenizer), _special_settings(tokenizer))
        known = self._keys.get(cheap)
        if known is None or known[0] is not tokenizer:
            known = self._keys[cheap] = (tokenizer, tokenizer_key(tokenizer))
        return known[1]


def build_tasks(
    manager, names: Sequence[str], limit: int | None, gen_kwargs: Mapping | None, templates_once: bool = True
) -> dict:
    """Load tasks and build their requests exactly as ``lm_eval.simple_evaluate`` would, with
    each prompt template compiled once instead of once per document (``eval_tasks/templates.py``;
    ``templates_once=False``: lm-eval's own compiling, for the tests and ``bench/task_build.py``)."""
    from lm_eval.defaults import DEFAULT_OTHER_SEED
    from lm_eval.evaluator_utils import get_sample_size

    seed_like_lm_eval()
    with compiled_once() if templates_once else nullcontext():
        loaded = manager.load(list(names))
        for task in loaded["tasks"].values():
            if task.get_config("output_type") == "generate_until" and gen_kwargs:
                task.set_config(key="generation_kwargs", value=dict(gen_kwargs), update=True)
            if task.get_config("num_fewshot") is None:
                task.set_config(key="num_fewshot", value=0)
            task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
            task.build_all_requests(limit=get_sample_size(task, limit), rank=0, world_size=1)
    return loaded


def seed_like_lm_eval() -> None:
    """The global seeds ``simple_evaluate`` sets before it builds and runs anything."""
    import numpy
    import torch
    from lm_eval.defaults import DEFAULT_OTHER_SEED, DEFAULT_RANDOM_SEED

    random.seed(DEFAULT_RANDOM_SEED)
    numpy.random.seed(DEFAULT_OTHER_SEED)
    torch.manual_seed(DEFAULT_OTHER_SEED)


def _fresh_requests(task, requests: tuple, **_: object) -> None:
    # The cache key fixes limit, rank and the rest, so lm-eval's arguments say nothing new.
    task._instances = [dataclasses.replace(request, resps=[], filtered_resps={}) for request in requests]


def tokenizer_key(tokenizer) -> str:
    """sha256 of a tokenizer's class, vocabulary and special-token settings."""
    digest = hashlib.sha256(type(tokenizer).__qualname__.encode())
    digest.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    digest.update(_special_settings(tokenizer).encode())
    return digest.hexdigest()


def _special_settings(tokenizer) -> str:
    special = {
        "special": tokenizer.special_tokens_map,
        "bos": getattr(tokenizer, "add_bos_token", None),
        "eos": getattr(tokenizer, "add_eos_token", None),
    }
    return json.dumps(special, sort_keys=True, default=str)
