"""Training scenarios: named sets of tasks.

``multitask``: five tasks, one per skill family (the paper's "five-task dataset" is not public;
this is the project's choice, any registry task can be named instead). ``multilingual``: one
XCOPA language per task, with optional held-out languages that are never trained on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from metalora.data.registry import get_task
from metalora.data.xcopa import XCOPA_LANGUAGES
from metalora.errors import MlbenchError

SCENARIOS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "multitask": (
            "strategyqa",
            "social_iqa",
            "logical_fallacy_detection",
            "vitaminc_fact_verification",
            "gsm8k",
        ),
        "multilingual": tuple(f"xcopa_{language}" for language in XCOPA_LANGUAGES),
    }
)


def scenario_tasks(
    scenario: str, tasks: Sequence[str] | None = None, held_out_languages: Sequence[str] = ()
) -> tuple[str, ...]:
    """The training tasks of a scenario: explicit ``tasks`` win; held-out languages are removed."""
    if scenario not in SCENARIOS:
        raise MlbenchError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")
    chosen = tuple(tasks) if tasks else SCENARIOS[scenario]
    for name in chosen:
        get_task(name)
    if len(set(chosen)) != len(chosen):
        raise MlbenchError(f"tasks are listed more than once: {', '.join(chosen)}; name each task once")
    for language in held_out_languages:
        if language not in XCOPA_LANGUAGES:
            raise MlbenchError(
                f"unknown held-out language {language!r}; choose from {', '.join(XCOPA_LANGUAGES)}"
            )
    held = {f"xcopa_{language}" for language in held_out_languages}
    remaining = tuple(name for name in chosen if name not in held)
    if not remaining:
        raise MlbenchError("every task is held out; keep at least one language for training")
    return remaining
