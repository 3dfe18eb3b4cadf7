"""Argument checks shared by the layer constructors: every message names the argument."""

from collections.abc import Collection


def check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


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
