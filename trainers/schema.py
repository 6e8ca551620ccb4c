"""The types every setting is declared with, and how a violation reads.

One vocabulary for the three places settings come from: a cell's fields
(:class:`trainers.config.CellConfig`), a sweep file (:mod:`orchestrator.spaces`) and a search
plan (:mod:`orchestrator.search_plan`). Each type is a pydantic v2 ``Annotated`` alias: strict
(no ``True`` for an int, no ``1`` for a bool, no ``2.0`` for an int; an int is fine for a
float), with its range declared beside it, so the range is stated once and the error message
is derived from it.

Text from a command line (``--set epochs=5``, ``--epochs 5``) is parsed first by
:func:`from_text`, strictly too (``"2.0"`` is not an int, ``"0.7"`` not a bool), and then
validated like any other value. :func:`problem` turns pydantic's first error into the one line
the CLIs print: ``<field> must be <what>, got <value>``.
"""

from __future__ import annotations

import numbers
import os
import types
import typing
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, Strict, ValidationError
from pydantic.fields import FieldInfo


def _native_int(value: Any) -> Any:
    """numpy integers (Ray Tune's ``randint``/``choice`` samples) as Python ints."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
        return int(value)
    return value


def _native_float(value: Any) -> Any:
    """numpy floats and integers as Python floats (bools stay bools, and are refused)."""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
        return float(value)
    return value


def _path_text(value: Any) -> Any:
    """A ``pathlib.Path`` where a path is expected, as its text."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _integer(*constraints: Any) -> Any:
    return Annotated[(int, BeforeValidator(_native_int), Strict(), *constraints)]


def _number(*constraints: Any) -> Any:
    return Annotated[(float, BeforeValidator(_native_float), Strict(),
                      Field(allow_inf_nan=False), *constraints)]


PositiveInt = _integer(Field(ge=1))
Count = _integer(Field(ge=0))
Positive = _number(Field(gt=0))
NonNegative = _number(Field(ge=0))
Number = _number()
Ratio = _number(Field(gt=0, le=1))
"""A share of the training set: (0, 1]."""
OpenShare = _number(Field(gt=0, lt=1))
"""(0, 1): a validation fraction."""
Share = _number(Field(ge=0, lt=1))
"""[0, 1): dropout, the warmup share."""
Flag = Annotated[bool, Strict()]
Text = Annotated[str, Strict()]
PathText = Annotated[Text | None, BeforeValidator(_path_text)]


def _layer_set(value: str) -> str:
    """``auto`` or encoder layers ``k`` as comma-separated integers >= 0, normalised
    (``"7, 9,12"`` -> ``"7,9,12"``; sorted, each once)."""
    text = value.strip().lower()
    if text == "auto":
        return text
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"mix_layers must be 'auto' or layers k >= 0 separated by commas "
                         f"(e.g. 7,9,12), got {value!r}")
    return ",".join(str(k) for k in sorted({int(p) for p in parts}))


LayerSet = Annotated[str, Strict(), AfterValidator(_layer_set)]
"""Encoder layers to mix at: ``auto`` (the strategy's default set) or ``"7,9,12"``."""


class Role:
    """A marker in a field's ``Annotated`` metadata saying what kind of setting it is
    (pydantic ignores it). :data:`STRATEGY` marks the settings a strategy may read."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Role({self.name!r})"


STRATEGY = Role("strategy")
"""A strategy setting (``alpha``, ``mix_samples``, ``loss``, ...): logged and fingerprinted
only for the strategies that declare they read it (``Strategy.reads``)."""


def has_role(annotation: Any, role: Role) -> bool:
    """Whether ``role`` is in the ``Annotated`` metadata of ``annotation``."""
    return any(item is role for item in getattr(annotation, "__metadata__", ()))


# --------------------------------------------------------------------------- text from a CLI
def from_text(kind: type, text: str) -> Any:
    """Parse command-line ``text`` for a setting of type ``kind`` (int, float, bool, str).

    Whole-string and strict: ``"2"`` for an int, ``"0.5"``/``"1e-3"`` for a float,
    ``true``/``false`` (also ``yes``/``no``, ``1``/``0``) for a bool. Text that does not parse
    is returned unchanged, so the type check names it (``epochs must be of type int, got
    'abc'``)."""
    stripped = text.strip()
    if kind is bool:
        lowered = stripped.lower()
        if lowered in {"true", "yes", "1"}:
            return True
        if lowered in {"false", "no", "0"}:
            return False
        return text
    if kind is int:
        return int(stripped) if stripped.lstrip("+-").isdigit() else text
    if kind is float:
        try:
            return float(stripped)
        except ValueError:
            return text
    return text


# --------------------------------------------------------------------------- error messages
TYPE_NAMES = {"int": "int", "float": "float", "bool": "bool", "string": "str", "list": "list",
              "dict": "mapping", "model": "mapping", "dataclass": "mapping"}
RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal",
                "finite_number"}


def problem(exc: ValidationError, name: str | None = None,
            bounds: dict[str, Any] | None = None) -> str:
    """The first error of ``exc`` as one line: ``"<name> must be ..., got ..."``.

    Args:
        exc: pydantic's error.
        name: what to call the value (default: the last name in the error's location).
        bounds: the value's range (``{"gt": 0, "le": 1}``), to say the whole range when one
            end is violated; see :func:`bounds_of`.
    """
    error = exc.errors(include_url=False)[0]
    loc = tuple(error["loc"])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    label = name or next((str(p) for p in reversed(loc) if isinstance(p, str)), "value")
    got = f", got {value!r}"
    base = kind.split("_")[0]
    if kind == "missing":
        return f"{label} is required"
    if kind == "extra_forbidden":
        return f"{label}: unknown setting"
    if kind == "literal_error":
        choices = ", ".join(str(c).strip("'") for c in ctx["expected"].replace(" or ", ", ")
                            .split(", "))
        return f"unknown {label} {value!r}; choose from {choices}"
    if kind in RANGE_ERRORS:
        return f"{label} must be {describe_range(bounds or ctx, error)}{got}"
    if kind == "too_short":
        return f"{label} must not be empty{got}"
    if kind == "list_type":
        return f"{label} must be a non-empty list{got}"
    if kind in {"value_error", "assertion_error"}:
        return str(ctx.get("error", error["msg"]))
    if base in TYPE_NAMES and (kind.endswith("_type") or kind.endswith("_parsing")
                               or kind.endswith("_from_float") or kind == "dataclass_type"):
        return f"{label} must be of type {TYPE_NAMES[base]}{got}"
    return f"{label}: {error['msg'][0].lower()}{error['msg'][1:]}{got}"


def bounds_of(annotation: Any) -> dict[str, Any]:
    """The range declared on an ``Annotated`` type or a pydantic field: ``{"gt": 0, "le":
    1}``, and ``"int"`` for integers."""
    out: dict[str, Any] = {}
    if isinstance(annotation, FieldInfo):
        annotation = Annotated[(annotation.annotation, *annotation.metadata)] \
            if annotation.metadata else annotation.annotation
    options = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(options) == 1:
        annotation = options[0]  # Optional[X]: X's range
    items = getattr(annotation, "__metadata__", ())
    for item in [*items, *(m for i in items for m in getattr(i, "metadata", ()))]:
        for key in ("gt", "ge", "lt", "le"):
            if hasattr(item, key) and getattr(item, key) is not None:
                out[key] = getattr(item, key)
    if getattr(annotation, "__origin__", None) is int:
        out["int"] = True
    return out


def describe_range(bounds: dict[str, Any], error: dict[str, Any]) -> str:
    """``in (0, 1]``, ``> 0``, ``an integer >= 1``, ``finite``: the range in words."""
    low = ("(", bounds["gt"]) if "gt" in bounds else ("[", bounds["ge"]) if "ge" in bounds \
        else None
    high = (")", bounds["lt"]) if "lt" in bounds else ("]", bounds["le"]) if "le" in bounds \
        else None
    if low and high:
        return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low:
        text = f"{'>' if low[0] == '(' else '>='} {low[1]:g}"
        return f"an integer {text}" if bounds.get("int") else text
    if high:
        return f"{'<' if high[0] == ')' else '<='} {high[1]:g}"
    return "a finite number" if error["type"] == "finite_number" else error["msg"].lower()
