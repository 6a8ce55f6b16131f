"""Dataset loader the MMLU task YAMLs name with ``!function``.

Docs use the hub schema (``question``, ``subject``, ``choices``, ``answer``) so the prompt fields of
the YAMLs are those of lm-eval's own ``mmlu_<subject>`` tasks. With ``shots > 0`` the first
``shots`` items of the subject's file become the ``dev`` split the exemplars are drawn from (in
order) and are removed from ``test``: the mirror has no dev split, and an exemplar must never be
evaluated.
"""

from __future__ import annotations

from eval_tasks.dataroot import dataset_dict, root_from_metadata
from metalora.data.mmlu import mmlu_rows, mmlu_split


def load(subject: str, shots: int = 0, **metadata):
    rows = mmlu_rows(root_from_metadata(metadata), subject)
    exemplars, evaluated = mmlu_split(rows, shots)
    return dataset_dict({"test": evaluated, "dev": exemplars} if shots else {"test": evaluated})
