"""Dataset loader the MMLU task YAMLs name with ``!function``.

Docs use the hub schema (``question``, ``subject``, ``choices``, ``answer``) so the prompt fields of
the YAMLs are those of lm-eval's own ``mmlu_<subject>`` tasks. Every test item is evaluated. With
``shots > 0`` the ``dev`` split the exemplars are drawn from (in order) holds the subject's real
MMLU dev items, parsed from the copy lm-eval ships (``metalora.data.mmlu.mmlu_dev_exemplars``).
"""

from __future__ import annotations

from eval_tasks.dataroot import dataset_dict, root_from_metadata
from metalora.data.mmlu import mmlu_dev_exemplars, mmlu_rows


def load(subject: str, shots: int = 0, **metadata):
    rows = mmlu_rows(root_from_metadata(metadata), subject)
    return dataset_dict({"test": rows, "dev": mmlu_dev_exemplars(subject)} if shots else {"test": rows})
