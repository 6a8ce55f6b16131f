"""Profiles: named sets of defaults for a run's own and shared training options.

Kept free of torch and of the method table so the report can read the descriptions; a method's
defaults for its own options under a profile are in its spec (``MethodSpec.profile_defaults``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True)
class Profile:
    description: str
    defaults: Mapping[str, object]
    comparable: bool  # whether its numbers may be compared with the paper's protocol


# "quick" and "smoke" exist because training SmolLM2-135M on 2 CPU cores runs at a few hundred
# tokens per second: the full protocol would take days there. Their numbers are marked as such.
PROFILES: Mapping[str, Profile] = MappingProxyType(
    {
        "full": Profile("the full protocol: method defaults, complete benchmarks", MappingProxyType({}), True),
        # One pass over every budget (budget rule epochs, 1; compute_epochs 1 where a sweep names
        # matched_compute): the fewest updates under which every budget example is still seen.
        "quick": Profile(
            "CPU quick run: one pass over every budget, short sequences, a small evaluation subset",
            MappingProxyType(
                {"budget_rule": "epochs", "epochs": 1, "compute_epochs": 1, "max_seq_len": 128, "batch_size": 4,
                 "eval_limit": 1, "max_gen_tokens": 32}
            ),
            False,
        ),
        "smoke": Profile(
            "CPU smoke run for sweeps: one pass over every budget, short sequences, one item per evaluated task",
            MappingProxyType(
                {"budget_rule": "epochs", "epochs": 1, "compute_epochs": 1, "max_seq_len": 128, "batch_size": 4,
                 "eval_limit": 1, "max_gen_tokens": 32, "full_cap": 40}
            ),
            False,
        ),
    }
)
