"""Each method's option defaults, readable without importing the methods.

The method modules import torch, and the report, ``ls`` and ``show`` must not (they read stores on
machines without it, and fast). The report needs these defaults to read a run's ``method_options``
(stored as given: an option left out means its default) and to tell a method's default
configuration from its ablations: a MeTA-LoRA run with ``variant: phase2_only`` is the control,
never "MeTA-LoRA", however many such runs a store holds. ``tests/test_method_defaults.py`` checks
this table against the options dataclasses of the method table (``metalora.methods.METHODS``), so a
new method or a changed default fails the tests until it is written here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

METHOD_OPTION_DEFAULTS: Mapping[str, Mapping[str, object]] = MappingProxyType({
    "base": MappingProxyType({}),
    "lora": MappingProxyType({}),
    "hydralora": MappingProxyType({"num_heads": 4}),
    "metalora": MappingProxyType({
        "inner_steps": 3,
        "support_size": 8,
        "query_size": 8,
        "inner_lr": 0.01,
        "tasks_per_iteration": None,
        "variant": "first_order",
        "outer_optimizer": "adamw",
        "inner_loop": "sequential",
    }),
    "dora": MappingProxyType({}),
})

# Options a method sets to fit its data budget rather than to change what it does: at 10 examples
# per task MeTA-LoRA draws 5 + 5 support and query examples, since 8 + 8 would not fit. A setting
# whose only non-default options are these, the same for every setting at its budget, still stands
# for its method in the report's comparisons (``reports.settings``).
BUDGET_SHAPED: Mapping[str, tuple[str, ...]] = MappingProxyType({"metalora": ("support_size", "query_size")})
