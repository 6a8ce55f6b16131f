"""The evaluation harness on a tiny random-init Llama with SmolLM2's real tokenizer.

Agreement: the project's MMLU and XCOPA tasks give exactly lm-eval's own built-in task results when
the built-in task is pointed at the same local data, item by item.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from eval_tasks.dataroot import task_metadata
from eval_tasks.harness import evaluate
from eval_tasks.records import read_records
from eval_tasks.registry import EVAL_TASKS_DIR
from eval_tasks.results import TaskScore, aggregate_benchmark, small_tasks
from metalora.data.mmlu import mmlu_dev_exemplars
from metalora.data.root import DataRoot, resolve_data_root
from metalora.errors import MlbenchError
from metalora.provenance import sha256_file
from tests.helpers import smollm2_tokenizer, tiny_llama

SHARED_DATA = Path(__file__).parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def root() -> DataRoot:
    return resolve_data_root(os.environ.get("MLBENCH_DATA_DIR") or SHARED_DATA)


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(tokenizer)


def _run(lm, manager, task: str, limit: int) -> list[dict]:
    from lm_eval import simple_evaluate

    out = simple_evaluate(
        model=lm, tasks=[task], task_manager=manager, limit=limit, log_samples=True, bootstrap_iters=0
    )
    return sorted(out["samples"][task], key=lambda sample: sample["doc_id"])


def _assert_same(ours: list[dict], theirs: list[dict]) -> None:
    assert len(ours) == len(theirs) > 0
    for mine, builtin in zip(ours, theirs):
        assert mine["arguments"] == builtin["arguments"]  # the same prompts and continuations
        assert mine["filtered_resps"] == builtin["filtered_resps"]  # the same log-likelihoods, exactly
        assert mine["acc"] == builtin["acc"]


@pytest.fixture(scope="module")
def lm(model, tokenizer):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4)


def _builtin_yaml(folder: Path, name: str, builtin: str, overrides: dict) -> None:
    import lm_eval

    source = Path(lm_eval.__file__).parent / "tasks" / builtin
    config = {"include": str(source), "task": name, "tag": [], **overrides}
    (folder / f"{name}.yaml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML


def test_mmlu_agrees_with_lm_evals_builtin_task(tmp_path, root, lm):
    from lm_eval.tasks import TaskManager

    # The built-in task reads the hub schema; write the local CSV in that schema, by hand.
    with open(root.file("mmlu/test/anatomy_test.csv"), encoding="utf-8", newline="") as handle:
        rows = [
            {"question": r[0], "subject": "anatomy", "choices": r[1:5], "answer": "ABCD".index(r[5])}
            for r in csv.reader(handle)
        ]
    # 5-shot: lm-eval's own task given the same dev items (the copy inside lm-eval) and all test items.
    for split, split_rows in {"test": rows, "dev": mmlu_dev_exemplars("anatomy")}.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split_rows))
    common = {"dataset_path": "json", "dataset_name": None}
    files = {"cache_dir": str(tmp_path / "cache")}
    _builtin_yaml(tmp_path, "builtin_mmlu_anatomy", "mmlu/default/mmlu_anatomy.yaml", {**common,
        "dataset_kwargs": {**files, "data_files": {"test": str(tmp_path / "test.jsonl"), "dev": str(tmp_path / "dev.jsonl")}}})  # fmt: skip
    _builtin_yaml(tmp_path, "builtin_mmlu_5shot_anatomy", "mmlu/default/mmlu_anatomy.yaml", {**common,
        "num_fewshot": 5,
        "dataset_kwargs": {**files, "data_files": {"test": str(tmp_path / "test.jsonl"), "dev": str(tmp_path / "dev.jsonl")}}})  # fmt: skip
    manager = TaskManager(include_path=[str(EVAL_TASKS_DIR), str(tmp_path)], include_defaults=False,
                          metadata=task_metadata(root))  # fmt: skip

    _assert_same(_run(lm, manager, "mlbench_mmlu_anatomy", 24), _run(lm, manager, "builtin_mmlu_anatomy", 24))
    ours = _run(lm, manager, "mlbench_mmlu_5shot_anatomy", 8)
    _assert_same(ours, _run(lm, manager, "builtin_mmlu_5shot_anatomy", 8))
    assert ours[0]["doc"]["question"] == rows[0]["question"]  # every test item is evaluated


@pytest.mark.parametrize("language", ["et", "zh"])
def test_xcopa_agrees_with_lm_evals_builtin_task(tmp_path, root, lm, language):
    from lm_eval.tasks import TaskManager

    data_files = {"test": str(root.file(f"xcopa/data/{language}/test.{language}.jsonl")),
                  "validation": str(root.file(f"xcopa/data/{language}/val.{language}.jsonl"))}  # fmt: skip
    name = f"builtin_xcopa_{language}"
    _builtin_yaml(tmp_path, name, f"xcopa/default_{language}.yaml", {"dataset_path": "json", "dataset_name": None,
        "dataset_kwargs": {"data_files": data_files, "cache_dir": str(tmp_path / "cache")}})  # fmt: skip
    manager = TaskManager(include_path=[str(EVAL_TASKS_DIR), str(tmp_path)], include_defaults=False,
                          metadata=task_metadata(root))  # fmt: skip
    _assert_same(_run(lm, manager, f"mlbench_xcopa_{language}", 40), _run(lm, manager, name, 40))


def _run_gen(lm, manager, task: str, limit: int) -> list[dict]:
    from lm_eval import simple_evaluate

    out = simple_evaluate(model=lm, tasks=[task], task_manager=manager, limit=limit, log_samples=True,
                          bootstrap_iters=0, gen_kwargs={"max_gen_toks": 6})  # fmt: skip
    return sorted(out["samples"][task], key=lambda sample: (sample["doc_id"], sample.get("filter", "")))


@pytest.mark.parametrize("language", ["en", "fr"])
def test_mgsm_agrees_with_lm_evals_builtin_mgsm_direct(tmp_path, root, lm, language):
    from lm_eval.tasks import TaskManager

    from metalora.data.mgsm import mgsm_rows

    # The built-in task reads the hub schema (an answer of None selects its test-split prompt).
    rows = [{"question": r["question"], "answer": None, "answer_number": int(r["answer_number"]),
             "equation_solution": None} for r in mgsm_rows(root, language)]  # fmt: skip
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    name = f"builtin_mgsm_{language}"
    _builtin_yaml(tmp_path, name, f"mgsm/direct/mgsm_direct_{language}.yaml", {"dataset_path": "json",
        "dataset_name": None, "training_split": None, "dataset_kwargs": {
            "data_files": {"test": str(tmp_path / "test.jsonl")}, "cache_dir": str(tmp_path / "cache")}})  # fmt: skip
    manager = TaskManager(include_path=[str(EVAL_TASKS_DIR), str(tmp_path)], include_defaults=False,
                          metadata=task_metadata(root))  # fmt: skip
    ours = _run_gen(lm, manager, f"mlbench_mgsm_{language}", 3)
    theirs = _run_gen(lm, manager, name, 3)
    by_filter = {(s["doc_id"], s["filter"]): s for s in theirs}
    assert len(ours) == 3 and len(theirs) == 6
    for mine in ours:
        flexible, strict = by_filter[mine["doc_id"], "flexible-extract"], by_filter[mine["doc_id"], "remove_whitespace"]
        assert mine["arguments"] == flexible["arguments"]  # same prompt, stop sequences and settings
        assert mine["resps"] == flexible["resps"]
        assert mine["exact_match"] == flexible["exact_match"]
        assert mine["exact_match_strict"] == strict["exact_match"]
        assert mine["filtered_resps"][0] == mine["resps"][0][0]


def test_evaluate_reports_tasks_aggregates_provenance_and_records(tmp_path, root, model, tokenizer):
    result = evaluate(model, tokenizer, ["mmlu", "xwinograd"], data_root=root, limit=2, batch_size=4,
                      output_dir=tmp_path, run_label="tiny")  # fmt: skip
    assert result.benchmarks == ("mmlu", "xwinograd") and result.run_label == "tiny"
    mmlu = [score for score in result.tasks if score.benchmark == "mmlu"]
    assert len(mmlu) == 57 and all(score.n_evaluated == 2 for score in mmlu)
    assert result.task("mmlu", "anatomy").n_available == 135
    assert result.task("xwinograd", "zh").n_available == 16
    assert result.task("mmlu", "anatomy").lm_eval_task == "mlbench_mmlu_anatomy"

    records = read_records(Path(result.sample_files["mmlu"]))
    assert Path(result.sample_files["mmlu"]) == tmp_path / "samples" / "mmlu.jsonl.gz"
    assert len(records) == 114 and not list((tmp_path / "samples").glob(".*"))  # no temp files left
    first = records[0]
    assert set(first) == {"task", "doc_id", "prompt", "target", "target_text", "choices", "scores", "prediction",
                          "correct", "metrics"}  # fmt: skip
    assert first["choices"] == [" A", " B", " C", " D"] and len(first["scores"]) == 4
    assert first["correct"] == (first["prediction"] == first["target"])
    assert isinstance(read_records(Path(result.sample_files["xwinograd"]))[0]["prompt"], list)

    # XWinograd's fr (83 items) and zh (16) are flagged and left out of its macro mean.
    assert result.flagged == {"xwinograd": {
        "fr": "83 items, fewer than 100: shown separately, not in the macro mean",
        "zh": "16 items, fewer than 100: shown separately, not in the macro mean"}}  # fmt: skip
    macro = result.aggregate("xwinograd", "macro")
    kept = [result.task("xwinograd", language).metrics["acc"] for language in ("en", "jp", "pt", "ru")]
    assert (macro.n_tasks, macro.n_items) == (4, 8) and macro.value == pytest.approx(sum(kept) / 4)
    assert result.aggregate("xwinograd", "micro").n_items == 12
    assert json.loads(result.to_json())["flagged"]["xwinograd"]["zh"].startswith("16 items")

    # Reference rows come from the very items evaluated: recomputed here from the records' gold choices.
    for benchmark in ("mmlu", "xwinograd"):
        per_task = {}
        for record in read_records(Path(result.sample_files[benchmark])):
            per_task.setdefault(record["task"], []).append(record)
        for task, task_records in per_task.items():
            golds = [r["target"] for r in task_records]
            position = max(golds.count(g) for g in golds) / len(golds)
            references = {row: values["per_task"][task] for row, values in result.references[benchmark].items()}
            assert references["random"] == pytest.approx(sum(1 / len(r["choices"]) for r in task_records) / 2)
            assert references["always_position"] == pytest.approx(position)
    xwinograd = result.references["xwinograd"]["always_position"]
    assert xwinograd["macro"] == pytest.approx(sum(xwinograd["per_task"][t] for t in ("en", "jp", "pt", "ru")) / 4)
    assert set(json.loads(result.to_json())["references"]) == {"mmlu", "xwinograd"}

    # Aggregates agree with the records.
    correct = [float(record["correct"]) for record in records]
    assert result.aggregate("mmlu", "micro").value == pytest.approx(sum(correct) / len(correct))
    by_task = {score.task: score.metrics["acc"] for score in mmlu}
    assert result.aggregate("mmlu", "macro").value == pytest.approx(sum(by_task.values()) / 57)
    assert {agg.name for agg in result.aggregates if agg.benchmark == "mmlu"} == {
        "macro", "micro", "stem", "humanities", "social_sciences", "other"}  # fmt: skip
    assert result.aggregate("mmlu", "stem").n_items == 38

    assert result.data_files["mmlu/test/anatomy_test.csv"] == sha256_file(
        root.file("mmlu/test/anatomy_test.csv")
    )
    assert len(result.data_files) == 58
    assert result.versions["lm_eval"] and result.versions["transformers"]
    assert (
        result.task("mmlu", "anatomy").version == "1.0"
        and len(result.task("mmlu", "anatomy").config_hash) == 64
    )
    assert result.settings["limit"] == 2 and result.settings["merged_lora"] is False
    assert json.loads(result.to_json())["protocols"]["mmlu"].startswith("MMLU 57 subjects, 0-shot")


def test_scoring_compiles_each_template_once_and_scores_the_same(tmp_path, root, model, tokenizer, monkeypatch):
    """lm-eval renders every document's target again while it scores it, compiling its Jinja template
    each time; the fast backend compiles each distinct template once there too (eval_tasks/templates.py)
    and gets the same records as the stock backend, lm-eval untouched."""
    from collections import Counter

    from lm_eval import utils

    compiled = []
    compile_template = utils.env.from_string
    monkeypatch.setattr(utils.env, "from_string", lambda source, *args, **kwargs: compiled.append(source)
                        or compile_template(source, *args, **kwargs))
    subtasks = {"bbh": ["navigate", "snarks"]}
    fast = evaluate(model, tokenizer, ["bbh"], data_root=root, limit=4, batch_size=4, subtasks=subtasks,
                    output_dir=tmp_path / "fast", max_gen_tokens=4)  # fmt: skip
    # Each template once while the tasks are built and once while they are scored, not per document.
    assert compiled and max(Counter(compiled).values()) <= 2
    fast_compiles = len(compiled)
    stock = evaluate(model, tokenizer, ["bbh"], data_root=root, limit=4, batch_size=4, subtasks=subtasks,
                     output_dir=tmp_path / "stock", max_gen_tokens=4, eval_backend="hflm")  # fmt: skip
    # The stock backend is lm-eval as it is: the target template compiled for each of the 8 documents.
    assert Counter(compiled[fast_compiles:])["{{target}}"] >= 8
    assert read_records(Path(fast.sample_files["bbh"])) == read_records(Path(stock.sample_files["bbh"]))


def test_generative_records_hold_output_prediction_and_gold(tmp_path, root, model, tokenizer):
    result = evaluate(
        model, tokenizer, ["mgsm"], data_root=root, limit=1, max_gen_tokens=3, output_dir=tmp_path
    )
    assert result.settings["max_gen_tokens"] == {"mgsm": 3}
    records = read_records(tmp_path / "samples" / "mgsm.jsonl.gz")
    assert len(records) == 11
    assert {"output", "prediction", "gold", "prompt", "target"} <= set(records[0])
    assert records[0]["gold"] == "18" and records[0]["prompt"].endswith("\nAnswer:")


def test_a_malformed_file_fails_in_one_line_and_writes_nothing(tmp_path, root, model, tokenizer):
    data = tmp_path / "data"
    shutil.copytree(root.path / "mgsm", data / "mgsm")
    (data / "xwinograd").mkdir()
    lines = Path(root.file("xwinograd/dataset.tsv")).read_text(encoding="utf-8").splitlines(keepends=True)
    (data / "xwinograd" / "dataset.tsv").write_text("".join(lines[:5]) + "en\tbroken\n", encoding="utf-8")
    with pytest.raises(MlbenchError) as error:
        evaluate(model, tokenizer, ["mgsm", "xwinograd"], data_root=DataRoot(data), limit=1, max_gen_tokens=2,
                 output_dir=tmp_path / "run")  # fmt: skip
    assert str(error.value) == (
        f"malformed XWinograd file {data}/xwinograd/dataset.tsv at line 6: expected 7 tab-separated fields, found 2"
    )
    assert not (tmp_path / "run").exists()


def _lora(model, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    return peft_model


def test_lora_is_merged_for_the_call_and_restored_after(tokenizer, root):
    import torch

    peft_model = _lora(tiny_llama(tokenizer, seed=1), seed=2)
    peft_model.train()
    before = {name: tensor.clone() for name, tensor in peft_model.state_dict().items()}
    live = evaluate(peft_model, tokenizer, ["xcopa"], data_root=root, limit=3, merge_lora=False)
    merged = evaluate(peft_model, tokenizer, ["xcopa"], data_root=root, limit=3, merge_lora=True)
    assert live.settings["merged_lora"] is False and merged.settings["merged_lora"] is True
    for a, b in zip(live.tasks, merged.tasks):
        assert a.metrics == b.metrics
    assert peft_model.training and not any(getattr(m, "merged", False) for m in peft_model.modules())
    after = peft_model.state_dict()
    assert all(torch.allclose(before[name], after[name], atol=1e-6) for name in before)


def test_response_cache_is_keyed_by_the_weights(tmp_path, tokenizer, root):
    cache = tmp_path / "cache"
    base = tiny_llama(tokenizer, seed=3)
    first = evaluate(
        _lora(base, seed=4), tokenizer, ["xcopa"], data_root=root, limit=2, response_cache_dir=cache
    )
    other = evaluate(_lora(tiny_llama(tokenizer, seed=3), seed=5), tokenizer, ["xcopa"], data_root=root, limit=2,
                     response_cache_dir=cache)  # fmt: skip
    assert first.settings["response_cache"] != other.settings["response_cache"]
    assert len(list(cache.glob("*.db"))) == 2
    again = evaluate(_lora(tiny_llama(tokenizer, seed=3), seed=4), tokenizer, ["xcopa"], data_root=root, limit=2,
                     response_cache_dir=cache)  # fmt: skip
    assert again.settings["response_cache"] == first.settings["response_cache"]
    assert [s.metrics for s in again.tasks] == [s.metrics for s in first.tasks]


def _score(task: str, values: list[float]) -> TaskScore:
    from eval_tasks.results import mean_stderr

    return TaskScore("demo", task, f"mlbench_demo_{task}", {"acc": sum(values) / len(values)},
                     {"acc": mean_stderr(values)}, len(values), len(values), "1.0", "0" * 64)  # fmt: skip


def test_aggregates_are_exact_on_fixed_inputs():
    per_item = {
        "a": {"acc": [1.0, 1.0, 0.0, 0.0]},
        "b": {"acc": [1.0, 1.0]},
        "c": {"acc": [0.0, 0.0, 0.0, 1.0]},
    }
    scores = [_score(task, values["acc"]) for task, values in per_item.items()]
    aggregates = aggregate_benchmark(
        "demo", ("acc",), scores, per_item, "subject", {"a": "x", "b": "x", "c": "y"}
    )
    named = {agg.name: agg for agg in aggregates}
    assert named["macro"].value == pytest.approx((0.5 + 1.0 + 0.25) / 3)
    assert named["micro"].value == pytest.approx(5 / 10)
    assert named["x"].value == pytest.approx(4 / 6) and named["x"].n_tasks == 2 and named["x"].n_items == 6
    assert named["y"].value == pytest.approx(0.25)
    # sqrt(var/n) with the sample variance: 0.5 over 4 items -> sqrt((1/3)/4); 1.0 over 2 -> 0.
    assert scores[0].stderr["acc"] == pytest.approx((1 / 3 / 4) ** 0.5)
    assert named["macro"].stderr == pytest.approx(((1 / 12) + 0 + (0.25 / 4)) ** 0.5 / 3)
    assert named["micro"].stderr == pytest.approx(((0.25 * 10 / 9) / 10) ** 0.5)


def test_tasks_below_the_minimum_size_stay_out_of_the_macro_mean():
    per_item = {"big": {"acc": [1.0, 0.0, 1.0]}, "small": {"acc": [0.0]}, "mid": {"acc": [1.0, 1.0]}}
    scores = [_score(task, values["acc"]) for task, values in per_item.items()]
    named = {agg.name: agg for agg in aggregate_benchmark("demo", ("acc",), scores, per_item, "language", {}, 2)}
    assert named["macro"].value == pytest.approx((2 / 3 + 1.0) / 2) and named["macro"].n_tasks == 2
    assert named["macro"].method == (
        "mean over 2 languages with at least 2 items (small: fewer, shown separately) of the per-language acc"
    )
    assert named["micro"].value == pytest.approx(4 / 6)  # micro pools every evaluated item
    assert small_tasks(scores, 2) == {"small": "1 items, fewer than 2: shown separately, not in the macro mean"}
    # Every task too small: the macro mean covers them all and says so.
    only = {agg.name: agg for agg in aggregate_benchmark("demo", ("acc",), scores[1:2], per_item, "language", {}, 2)}
    assert only["macro"].value == 0.0 and only["macro"].method.endswith("(every one has fewer than 2 items) of the per-language acc")
    assert small_tasks(scores, None) == {}
