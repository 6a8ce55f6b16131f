"""Options as frozen dataclasses, and the few rules that turn them into CLI flags and sweep keys.

Every option of a run lives in one dataclass field with a ``help`` text (``option(...)``): the run's
own fields (``RunConfig``), the shared training fields (``TrainConfig``), each method's options and
the execution settings. The CLI builds one flag per field and a sweep accepts one key per field,
both read from these dataclasses, so a new option is one field and nothing else.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields

from metalora.errors import MlbenchError


def option(default, help: str):
    """A dataclass field with its help text (shown by ``--help``; the default is appended there)."""
    return field(default=default, metadata={"help": help})


def option_names(options_class: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(options_class) if f.init)


def option_help(options_class: type, name: str) -> str:
    return next(f for f in fields(options_class) if f.name == name).metadata.get("help", "")


def option_default(options_class: type, name: str):
    spec = next(f for f in fields(options_class) if f.name == name)
    return spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()


def option_type(options_class: type, name: str):
    """The field's type, resolved (modules use ``from __future__ import annotations``)."""
    return typing.get_type_hints(options_class)[name]


def is_name_list(annotation) -> bool:
    """``tuple[str, ...]`` (or that or None): given as a list or as comma-separated names."""
    members = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    return any(typing.get_origin(member) is tuple for member in members)


def flag_type(annotation) -> type:
    """What the command line parses a field as: names lists and unions stay text."""
    members = [m for m in (typing.get_args(annotation) if _is_union(annotation) else (annotation,)) if m is not type(None)]
    if len(members) == 1 and members[0] in (int, float, str, bool):
        return members[0]
    return str


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def name_list(key: str, value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise MlbenchError(f"{key} must be a list of names or a comma-separated string, got {value!r}")


def options_from_dict(options_class: type, values: typing.Mapping | None, *, what: str):
    """Build an options dataclass from plain values, refusing unknown keys by name; list-of-names
    fields accept a list or a comma-separated string. Not validated: call ``validate()``."""
    values = dict(values or {})
    known = option_names(options_class)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise MlbenchError(
            f"unknown option(s) {', '.join(unknown)} for {what}; allowed: {', '.join(sorted(known)) or 'none'}"
        )
    for key, value in values.items():
        values[key] = typed_value(key, option_type(options_class, key), value)
    return options_class(**values)


def typed_value(key: str, annotation, value):
    """``value`` as the field's type, or one line naming the field. Numbers come as people write
    them (a sweep's ``"1e-4"`` is a float); a bool is never a number; unions other than "X or
    None" (e.g. ``shots``: a number or 'full') are left to the field's own check."""
    if is_name_list(annotation):
        return name_list(key, value)
    members = [m for m in (typing.get_args(annotation) if _is_union(annotation) else (annotation,)) if m is not type(None)]
    if len(members) != 1 or (value is None and _is_union(annotation)):
        return value
    kind = members[0]
    if kind is float:
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return value  # an int stays an int: converting would change existing run ids
        raise MlbenchError(f"{key} must be a number (e.g. 0.0002 or 2e-4), got {value!r}")
    if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
        raise MlbenchError(f"{key} must be an integer, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise MlbenchError(f"{key} must be text, got {value!r}")
    return value


def require_positive(name: str, value: float, *, integer: bool = True) -> None:
    kind = "integer" if integer else "number"
    if isinstance(value, float) and not math.isfinite(value):
        # An infinite rate trains NaN weights that would evaluate as a real (always-"A") score.
        raise MlbenchError(f"{name} must be a finite positive {kind}, got {value!r}")
    if (
        (integer and (not isinstance(value, int) or isinstance(value, bool)))
        or not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not value > 0
    ):
        raise MlbenchError(f"{name} must be a positive {kind}, got {value!r}")


def require_range(name: str, value: float, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise MlbenchError(f"{name} must be between {low} and {high}, got {value!r}")


def require_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise MlbenchError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


@dataclass(frozen=True)
class NoOptions:
    """For methods without options of their own."""

    def validate(self) -> NoOptions:
        return self
