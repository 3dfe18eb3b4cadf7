"""Argument checks shared by the layer settings and constructors: every message names the argument."""

import dataclasses
import typing
from collections.abc import Collection
from typing import Any

from pydantic import TypeAdapter, ValidationError


def check_integer(name: str, value: int, lowest: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
        raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")


def check_positive(name: str, value: int) -> None:
    check_integer(name, value, lowest=1)


def check_choice(name: str, value: str, allowed: Collection[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {sorted(allowed)}")


def check_capacity_factor(name: str, value: float | None) -> None:
    """None means dropless; otherwise the factor must be a positive number."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a number > 0 or None (dropless), got {value!r}")


def check_top_k(top_k: int, num_experts: int) -> None:
    check_positive("num_experts", num_experts)
    check_positive("top_k", top_k)
    if top_k > num_experts:
        raise ValueError(f"top_k={top_k} must be <= num_experts={num_experts}")


def describe_type(hint: Any) -> str:
    """What a value of type ``hint`` is, as an error message says it."""
    if hint is bool:
        return "true or false"
    return "of type " + (hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", ""))


def check_field_types(settings: Any) -> None:
    """Each field of the dataclass ``settings`` against its annotation, strictly: 1.0 is no int,
    "1" no float. Nested settings need only be of their class: they check themselves."""
    for name, hint in typing.get_type_hints(type(settings)).items():
        value = getattr(settings, name)
        if hint is Any:
            continue
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise ValueError(f"{name}={value!r} must be {describe_type(hint)}")
            continue
        try:
            TypeAdapter(hint).validate_python(value, strict=True)
        except ValidationError:
            raise ValueError(f"{name}={value!r} must be {describe_type(hint)}") from None
