"""Argument checks shared by the layer constructors: every message names the argument."""

import typing
from collections.abc import Collection, Mapping
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


def check_types(owner: type, arguments: Mapping[str, Any]) -> None:
    """Each argument against the type its name has in ``owner``'s constructor (and those of its
    bases, for arguments passed on through ``*args, **kwargs``), strictly: 1.0 is no int, "1" no float."""
    hints: dict[str, Any] = {}
    for cls in reversed(owner.__mro__):
        if "__init__" in vars(cls) and cls.__module__.startswith("hypermoe"):
            hints.update(typing.get_type_hints(cls.__init__))
    for name, value in arguments.items():
        if name not in hints:
            continue
        try:
            TypeAdapter(hints[name]).validate_python(value, strict=True)
        except ValidationError:
            raise ValueError(f"{name}={value!r} must be of type {_type_name(hints[name])}") from None


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
