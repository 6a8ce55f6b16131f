"""lm-eval's prompt templates, each compiled once while the fast backend builds and scores its tasks.

lm-eval renders a task's ``doc_to_text``/``doc_to_target``/``doc_to_choice`` Jinja templates with
``lm_eval.utils.apply_template``, which compiles the template string again for every document:
building MMLU's 14,042 documents spent 35.5 of its 42.2 s compiling the same few templates (on the
2-core development machine, ``bench/task_build.py``). Within ``compiled_once()`` the same function
compiles each distinct string once, in lm-eval's own Jinja environment, and renders it as before, so
every prompt is the same string (tests compare them); outside it lm-eval is as it was.

The same holds when lm-eval scores: it renders each document's target again (``doc_to_target``),
3.7 of the 35.7 s a warm BBH evaluation took on the H200 (``bench/eval_profile.py --profile``), so the
fast backend's ``evaluate`` call runs within ``compiled_once()`` too. Only the fast backend uses it:
the stock backend stays lm-eval's ``simple_evaluate``, untouched, as the reference it is measured
against.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def compiled_once() -> Iterator[dict]:
    """Within the block, lm-eval compiles each template string once; yields the compiled ones
    (template string -> jinja2 Template)."""
    from lm_eval import utils

    compiled: dict = {}
    original = utils.apply_template

    def apply_template(template: str, doc: dict) -> str:
        found = compiled.get(template)
        if found is None:
            found = compiled[template] = utils.env.from_string(template)
        return found.render(**doc)

    utils.apply_template = apply_template
    try:
        yield compiled
    finally:
        utils.apply_template = original
