"""The task cache hands out the requests a fresh build makes, with empty responses every time, and
an evaluation from cached tasks scores exactly as one from freshly built tasks."""

from __future__ import annotations

from eval_tasks.task_cache import TaskCache, TaskKey, build_tasks

TASKS = ("mlbench_bbh_mc_snarks", "mlbench_mmlu_anatomy", "mlbench_bbh_boolean_expressions")
GEN_KWARGS = {"max_gen_toks": 4}


def _key(data_root, limit: int = 3) -> TaskKey:
    return TaskKey.make("mixed", TASKS, data_root, {"a.csv": "0" * 64}, limit, GEN_KWARGS)


def _signature(loaded: dict) -> list:
    return [
        (
            name,
            request.request_type,
            request.doc_id,
            request.idx,
            request.args,
            request.repeats,
            request.resps,
        )
        for name, task in loaded["tasks"].items()
        for request in task.instances
    ]


def test_cached_tasks_give_the_requests_of_a_fresh_build(data_root):
    cache = TaskCache()
    cached = cache.tasks(_key(data_root), data_root, GEN_KWARGS)
    fresh = build_tasks(cache.manager(data_root), TASKS, 3, GEN_KWARGS)
    assert len(_signature(fresh)) == 3 * 2 + 3 * 4 + 3
    assert _signature(cached) == _signature(fresh)
    assert cached["tasks"]["mlbench_bbh_boolean_expressions"].instances[0].args[1]["max_gen_toks"] == 4

    for task in cached["tasks"].values():  # as an evaluation leaves them
        for request in task.instances:
            request.resps.append((0.0, False))
            request.filtered_resps["none"] = (0.0, False)
    again = cache.tasks(_key(data_root), data_root, GEN_KWARGS)
    assert again is cached and (cache.stats.hits, cache.stats.misses) == (1, 1)
    for task in again["tasks"].values():
        task.build_all_requests(limit=3, rank=0, world_size=1)  # what lm-eval's evaluate calls
        assert all(request.filtered_resps == {} for request in task.instances)
    assert _signature(again) == _signature(fresh)

    other = cache.tasks(_key(data_root, limit=2), data_root, GEN_KWARGS)
    assert other is not cached and cache.stats.misses == 2 and len(_signature(other)) == 2 * 2 + 2 * 4 + 2


def test_tokenizations_are_kept_per_tokenizer(tokenizer):
    from tests.conftest import _byte_tokenizer

    cache = TaskCache()
    memo = cache.encodings(tokenizer)
    assert cache.encodings(_byte_tokenizer()) is memo  # another object, the same vocabulary
    other = _byte_tokenizer()
    assert cache.encodings(other) is memo
    other.add_tokens(["<extra>"])  # the same object, changed since: its key is computed again
    assert cache.encodings(other) is not memo
    assert cache.encodings(other) is cache.encodings(other)
    other.add_special_tokens({"pad_token": "<extra>"})
    assert cache.encodings(other) is not cache.encodings(_byte_tokenizer())
    texts = cache.token_texts(tokenizer)
    assert cache.token_texts(_byte_tokenizer()) is texts and len(texts) == 257 and texts[ord("a") - 33] == "a"


def test_a_cached_evaluation_scores_exactly_as_a_fresh_one(tmp_path, tokenizer, data_root):
    from eval_tasks.harness import evaluate
    from tests.conftest import make_tiny_llama

    model = make_tiny_llama()
    subtasks = {"bbh_mc": ["snarks"], "bbh": ["boolean_expressions"]}
    cache = TaskCache()

    def run():
        return evaluate(model, tokenizer, list(subtasks), data_root=data_root, limit=2, batch_size=2,
                        max_gen_tokens=3, subtasks=subtasks, task_cache=cache)  # fmt: skip

    first, second = run(), run()
    assert (cache.stats.hits, cache.stats.misses, cache.stats.reference_hits) == (2, 2, 2)
    fresh = evaluate(model, tokenizer, list(subtasks), data_root=data_root, limit=2, batch_size=2,
                     max_gen_tokens=3, subtasks=subtasks)  # fmt: skip
    for result in (second, fresh):
        assert [(s.task, s.metrics, s.n_evaluated, s.config_hash) for s in result.tasks] == [
            (s.task, s.metrics, s.n_evaluated, s.config_hash) for s in first.tasks
        ]
        assert result.aggregates == first.aggregates
        assert result.references == first.references
    assert first.references["bbh"]["always_position"]["per_task"].keys() == {"boolean_expressions"}
    second.references["bbh"]["random"]["macro"] = -1.0  # a caller's change stays its own
    assert run().references == first.references
    assert len(cache.encodings(tokenizer)) > 0  # FastLM tokenized through the cache's memo


def test_templates_compiled_once_give_lm_evals_own_requests(data_root, monkeypatch):
    # lm-eval compiles a task's Jinja templates again for every document; the task cache compiles
    # each distinct template once (eval_tasks/templates.py) and must build the very same requests.
    from lm_eval import utils

    compiled = []
    compile_template = utils.env.from_string
    monkeypatch.setattr(utils.env, "from_string", lambda source, *args, **kwargs: compiled.append(source)
                        or compile_template(source, *args, **kwargs))
    lm_evals_own = utils.apply_template
    manager = TaskCache().manager(data_root)
    per_document = build_tasks(manager, TASKS, 5, GEN_KWARGS, templates_once=False)
    compiled_per_document = list(compiled)
    compiled.clear()
    once = build_tasks(manager, TASKS, 5, GEN_KWARGS)
    assert _signature(once) == _signature(per_document)
    assert len(compiled) == len(set(compiled)) == len(set(compiled_per_document))  # each template once
    assert len(compiled_per_document) >= 2 * 15  # a prompt and a target per document, at least
    assert utils.apply_template is lm_evals_own  # lm-eval is left as it was
