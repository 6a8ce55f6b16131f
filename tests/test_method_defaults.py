"""The torch-free table of method option defaults equals the method table's options dataclasses."""

from dataclasses import asdict

from metalora.method_defaults import METHOD_OPTION_DEFAULTS
from metalora.methods import METHODS


def test_every_method_and_default_is_in_the_torch_free_table():
    live = {name: asdict(spec.options()) for name, spec in METHODS.items()}
    assert {name: dict(defaults) for name, defaults in METHOD_OPTION_DEFAULTS.items()} == live
