"""The benchmarks a run can ask for, by name: what lm-eval group each one is, what its tasks are,
how it is scored and aggregated, and how many items it evaluates.

Adding a benchmark is one ``BenchmarkSpec`` in ``_SPECS`` plus its YAML template; ``python -m
eval_tasks.generate`` then writes the per-task YAMLs and the group file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from eval_tasks.bbh.answers import BBH_ANSWERS
from eval_tasks.bbh.functions import explain_answer_only, explain_cot
from eval_tasks.heldout.functions import explain as explain_heldout
from eval_tasks.mgsm.functions import MGSM_PROMPT_WORDS
from eval_tasks.mgsm.functions import explain as explain_mgsm
from metalora.data.bbh import BBH_ITEM_COUNTS, BBH_TASKS, bbh_item_file, bbh_prompt_file
from metalora.data.mgsm import MGSM_ITEMS_PER_LANGUAGE, MGSM_LANGUAGES, mgsm_file
from metalora.data.mmlu import MMLU_CATEGORIES, MMLU_DEV_SHORTFALL, MMLU_ITEM_COUNTS, MMLU_SUBJECTS, mmlu_file
from metalora.data.registry import HELD_OUT_COUNTS, TRAINING_TASKS
from metalora.data.xcopa import XCOPA_LANGUAGES
from metalora.data.xwinograd import XWINOGRAD_COUNTS, XWINOGRAD_FILE, XWINOGRAD_LANGUAGES
from metalora.errors import MlbenchError

EVAL_TASKS_DIR = Path(__file__).resolve().parent  # the include_path handed to lm-eval
MMLU_FEWSHOT = 5
MGSM_MAX_GEN_TOKENS = 256  # lm-eval's default (HFLM.max_gen_toks), as its mgsm tasks run
XCOPA_TEST_ITEMS = 500
# A language with fewer items gives too noisy a score to weigh as much as the others in a macro mean.
XWINOGRAD_MIN_ITEMS = 100
# The three upstream BBH items whose target is none of their listed options (see bbh/functions.py).
BBH_MC_UNSCORABLE = MappingProxyType({"movie_recommendation": 1, "ruin_names": 2})
BBH_MC_TASKS = tuple(task for task in BBH_TASKS if BBH_ANSWERS[task].closed)


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    protocol: str  # one line, recorded with every result
    folder: str  # sub-folder of eval_tasks/ holding the YAMLs
    template: str  # the YAML every task of the benchmark includes
    subtasks: tuple[str, ...]  # BBH task, MMLU subject or language, in report order
    item_counts: Mapping[str, int]  # evaluated items per subtask when no --limit is given
    metrics: tuple[str, ...]  # lm-eval metric names reported per task; the first is primary
    data_files: Callable[[str], tuple[str, ...]]  # files read under a data root, per subtask
    dataset_kwargs: Callable[[str], dict]  # arguments of the template's custom_dataset loader
    extra_config: Callable[[str], dict] = lambda subtask: {}  # per-task YAML keys beyond those
    max_gen_tokens: int | None = None  # default cap on generated tokens (generative benchmarks)
    explain: Callable[[dict, str], dict] | None = None  # generation -> prediction/gold for records
    hub_sources: str = ""  # where the data comes from without a data root
    categories: Mapping[str, str] = field(default_factory=dict)  # subtask -> category group
    unit: str = "task"
    # Subtasks with fewer items are flagged and left out of the macro mean (results.small_tasks).
    min_items_for_macro: int | None = None
    templates: Mapping[str, str] = field(default_factory=dict)  # subtask -> template, where not ``template``
    # The subtasks are training tasks: a run evaluates those it trained on (training_task_subtasks).
    follows_training_tasks: bool = False

    def template_for(self, subtask: str) -> str:
        return self.templates.get(subtask, self.template)

    @property
    def group(self) -> str:
        return f"mlbench_{self.name}"

    def task_name(self, subtask: str) -> str:
        return f"mlbench_{self.name}_{subtask}"

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self.task_name(subtask) for subtask in self.subtasks)

    @property
    def generative(self) -> bool:
        return self.max_gen_tokens is not None

    @property
    def total_items(self) -> int:
        return sum(self.item_counts.values())


def _bbh_files(task: str) -> tuple[str, ...]:
    return (bbh_item_file(task), bbh_prompt_file(task))


def _mmlu_description(subject: str) -> dict:
    # lm-eval's MMLU task description, so the prompts match its mmlu_<subject> tasks exactly.
    words = subject.replace("_", " ")
    return {"description": f"The following are multiple choice questions (with answers) about {words}.\n\n"}


def _mmlu_5shot_config(subject: str) -> dict:
    # A subject with fewer usable dev items runs with those it has, never with test items.
    shots = MMLU_DEV_SHORTFALL.get(subject)
    return _mmlu_description(subject) | ({"num_fewshot": shots} if shots else {})


def _mgsm_stops(language: str) -> dict:
    # lm-eval's mgsm_direct_<lang>.yaml: stop at the language's "Question:" word or an end-of-turn
    # marker. This replaces the template's generation_kwargs as a whole (lm-eval's include merge is
    # shallow), as lm-eval's own per-language files do.
    question_word = MGSM_PROMPT_WORDS[language][0].strip()
    return {
        "generation_kwargs": {
            "until": [question_word, "</s>", "<|im_end|>"],
            "do_sample": False,
            "max_gen_toks": MGSM_MAX_GEN_TOKENS,
        }
    }


_BBH_COUNTS = MappingProxyType(dict(BBH_ITEM_COUNTS))
HELDOUT_MAX_GEN_TOKENS = 256  # GSM8K worked answers run to about 130 tokens (lm-eval's default cap)
_SPECS = (
    BenchmarkSpec(
        name="heldout",
        protocol="The run's training tasks, each on its own held-out items (BIG-bench: the 20% never "
        "trained on; GSM8K test; XCOPA test), 0-shot with the training prompts; multiple choice by "
        "log-likelihood over the choices, GSM8K by exact match of the final number (acc)",
        folder="heldout",
        template="_heldout_mc_template_yaml",
        templates=MappingProxyType({"gsm8k": "_heldout_gsm8k_template_yaml"}),
        subtasks=tuple(TRAINING_TASKS),
        item_counts=HELD_OUT_COUNTS,
        metrics=("acc",),
        data_files=lambda task: TRAINING_TASKS[task].files,
        dataset_kwargs=lambda task: {"task": task},
        max_gen_tokens=HELDOUT_MAX_GEN_TOKENS,
        explain=explain_heldout,
        hub_sources="tasksource/bigbench, openai/gsm8k, cambridgeltl/xcopa",
        follows_training_tasks=True,
    ),
    BenchmarkSpec(
        name="bbh",
        protocol="BBH 27 tasks, 3-shot answer-only (official CoT exemplars without reasoning), "
        "strict exact match of the stripped generation (original protocol); exact_match_normalized "
        "after answer normalisation",
        folder="bbh",
        template="_bbh_template_yaml",
        subtasks=BBH_TASKS,
        item_counts=_BBH_COUNTS,
        metrics=("exact_match", "exact_match_normalized"),
        data_files=_bbh_files,
        dataset_kwargs=lambda task: {"task": task},
        max_gen_tokens=128,
        explain=explain_answer_only,
        hub_sources="lukaemon/bbh; prompts from lm_eval tasks/bbh/cot_fewshot",
    ),
    BenchmarkSpec(
        name="bbh_cot",
        protocol="BBH 27 tasks, 3-shot chain of thought (official prompts), exact match on the text "
        "after 'the answer is'",
        folder="bbh",
        template="_bbh_cot_template_yaml",
        subtasks=BBH_TASKS,
        item_counts=_BBH_COUNTS,
        metrics=("exact_match",),
        data_files=_bbh_files,
        dataset_kwargs=lambda task: {"task": task},
        max_gen_tokens=512,
        explain=explain_cot,
        hub_sources="lukaemon/bbh; prompts from lm_eval tasks/bbh/cot_fewshot",
    ),
    BenchmarkSpec(
        name="bbh_mc",
        protocol="BBH 23 closed-answer tasks, 3-shot answer-only prompt, log-likelihood over the "
        "task's answer options (acc, acc_norm)",
        folder="bbh",
        template="_bbh_mc_template_yaml",
        subtasks=BBH_MC_TASKS,
        item_counts=MappingProxyType(
            {task: BBH_ITEM_COUNTS[task] - BBH_MC_UNSCORABLE.get(task, 0) for task in BBH_MC_TASKS}
        ),
        metrics=("acc", "acc_norm"),
        data_files=_bbh_files,
        dataset_kwargs=lambda task: {"task": task},
        hub_sources="lukaemon/bbh; prompts from lm_eval tasks/bbh/cot_fewshot",
    ),
    BenchmarkSpec(
        name="mmlu",
        protocol="MMLU 57 subjects, 0-shot log-likelihood over A-D (lm-eval's MMLU prompt)",
        folder="mmlu",
        template="_mmlu_template_yaml",
        subtasks=MMLU_SUBJECTS,
        item_counts=MMLU_ITEM_COUNTS,
        metrics=("acc",),
        data_files=lambda subject: (mmlu_file(subject),),
        dataset_kwargs=lambda subject: {"subject": subject, "shots": 0},
        extra_config=_mmlu_description,
        categories=MMLU_CATEGORIES,
        unit="subject",
        hub_sources="cais/mmlu",
    ),
    BenchmarkSpec(
        name="mmlu_5shot",
        protocol=f"MMLU 57 subjects, {MMLU_FEWSHOT}-shot log-likelihood over A-D; exemplars are the subject's "
        "MMLU dev items as shipped in lm-eval (tasks/mmlu/flan_cot_fewshot), every test item evaluated; "
        + ", ".join(f"{subject} {shots}-shot" for subject, shots in MMLU_DEV_SHORTFALL.items())
        + " (fewer usable dev items)",
        folder="mmlu",
        template="_mmlu_5shot_template_yaml",
        subtasks=MMLU_SUBJECTS,
        item_counts=MMLU_ITEM_COUNTS,
        metrics=("acc",),
        data_files=lambda subject: (mmlu_file(subject),),
        dataset_kwargs=lambda subject: {"subject": subject, "shots": MMLU_FEWSHOT},
        extra_config=_mmlu_5shot_config,
        categories=MMLU_CATEGORIES,
        unit="subject",
        hub_sources="cais/mmlu",
    ),
    BenchmarkSpec(
        name="xcopa",
        protocol="XCOPA 11 languages, 0-shot log-likelihood of the two alternatives (test split)",
        folder="xcopa",
        template="_xcopa_template_yaml",
        subtasks=XCOPA_LANGUAGES,
        item_counts=MappingProxyType({language: XCOPA_TEST_ITEMS for language in XCOPA_LANGUAGES}),
        metrics=("acc",),
        data_files=lambda language: (f"xcopa/data/{language}/test.{language}.jsonl",),
        dataset_kwargs=lambda language: {"language": language},
        unit="language",
        hub_sources="cambridgeltl/xcopa",
    ),
    BenchmarkSpec(
        name="xwinograd",
        protocol="XWinograd 6 languages, 0-shot partial scoring of the sentence after each option; "
        f"languages with fewer than {XWINOGRAD_MIN_ITEMS} items (fr 83, zh 16) are shown separately, "
        "not in the macro mean",
        folder="xwinograd",
        template="_xwinograd_template_yaml",
        subtasks=XWINOGRAD_LANGUAGES,
        item_counts=MappingProxyType(dict(XWINOGRAD_COUNTS)),
        metrics=("acc",),
        data_files=lambda language: (XWINOGRAD_FILE,),
        dataset_kwargs=lambda language: {"language": language},
        unit="language",
        hub_sources="Muennighoff/xwinograd",
        min_items_for_macro=XWINOGRAD_MIN_ITEMS,
    ),
    BenchmarkSpec(
        name="mgsm",
        protocol="MGSM 11 languages, 0-shot direct answer as lm-eval's mgsm_direct (its stop sequences; "
        "exact match of the last number, flexible-extract; exact_match_strict: remove_whitespace)",
        folder="mgsm",
        template="_mgsm_template_yaml",
        subtasks=MGSM_LANGUAGES,
        item_counts=MappingProxyType({language: MGSM_ITEMS_PER_LANGUAGE for language in MGSM_LANGUAGES}),
        metrics=("exact_match", "exact_match_strict"),
        data_files=lambda language: (mgsm_file(language),),
        dataset_kwargs=lambda language: {"language": language},
        extra_config=_mgsm_stops,
        max_gen_tokens=MGSM_MAX_GEN_TOKENS,
        unit="language",
        explain=explain_mgsm,
        hub_sources="juletxara/mgsm",
    ),
)

BENCHMARKS: Mapping[str, BenchmarkSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})


def training_task_subtasks(benchmarks: Sequence[str], tasks: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The ``subtasks`` selection of a run that trained on ``tasks``: benchmarks whose subtasks are
    training tasks (``heldout``) evaluate exactly those tasks; the others are not restricted.

    A run's tasks follow its scenario, ``--tasks`` and ``--held-out-languages`` (a held-out XCOPA
    language is not a training task, so its items are not in ``heldout``; ``xcopa`` measures it).
    An untrained (base) run evaluates the tasks its scenario would train on, so its row compares.
    """
    return {name: tuple(tasks) for name in dict.fromkeys(benchmarks) if get_benchmark(name).follows_training_tasks}


def get_benchmark(name: str) -> BenchmarkSpec:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise MlbenchError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARKS)}") from None
