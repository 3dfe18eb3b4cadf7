"""The Hydra schema of ``conf/model/``, made from the variants' settings (``hypermoe.moe.settings``).

Each ``conf/model/<variant>.yaml`` names ``/schema/model/<variant>@_here_`` as its first default,
so a key the variant does not take, or a value of another type, is refused when the config is
composed: by Hydra on the command line, and as a ``ConfigError`` by ``hypermoe.config.compose_config``.
"""

import dataclasses
import typing
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf, ValidationError

from hypermoe.errors import ConfigError
from hypermoe.moe.build import VARIANTS
from hypermoe.moe.checks import describe_type


def model_schema(variant: str) -> DictConfig:
    """The schema of ``conf/model/<variant>.yaml``: the variant's settings with their defaults,
    plus the keys every model config has: ``variant``, ``moe_layers`` (the blocks given the layer:
    the backbone's placement by default; or all | every_<n> | [block indices]) and
    ``aux_loss_coefficients`` (the trainer's weight of each aux loss the layers record)."""
    keys = [
        ("variant", str, dataclasses.field(default=variant)),
        ("moe_layers", Any, dataclasses.field(default="${backbone.moe_layers}")),
        ("aux_loss_coefficients", dict[str, Any], dataclasses.field(default_factory=dict)),
    ]
    settings = VARIANTS[variant].settings
    config = dataclasses.make_dataclass(f"{settings.__name__}Config", keys, bases=(settings,))
    return _untyped(OmegaConf.structured(config))


def _untyped(node: DictConfig) -> DictConfig:
    """``node``'s typed values (an int stays an int) in containers without an object type, like
    the rest of the composed config: an unknown key is then refused as "not in struct" there too."""
    children = {key: node._get_node(key) for key in node}
    return OmegaConf.create({key: _untyped(c) if isinstance(c, DictConfig) else c for key, c in children.items()})


def register_model_schemas() -> None:
    """Every variant's schema in Hydra's ConfigStore, as ``schema/model/<variant>``."""
    for variant in VARIANTS:
        ConfigStore.instance().store(group="schema/model", name=variant, node=model_schema(variant))


def as_config_error(error: ConfigCompositionException) -> ConfigError | None:
    """A ``model.*`` value the schema refused, as a ConfigError naming the key and the type it
    takes, worded as the settings' own type check; None for any other composition error."""
    refusal = error.__cause__
    if not isinstance(refusal, ValidationError) or not refusal.full_key.startswith("model."):
        return None
    hint = _annotation(refusal.full_key.split(".")[1:])
    if hint is None:
        return None
    return ConfigError(f"{refusal.full_key}={refusal.value!r} must be {describe_type(hint)}")


def _annotation(path: list[str]) -> Any:
    """The type the settings of some variant give ``model.<path>``, or None."""
    for variant in VARIANTS.values():
        hint = variant.settings
        for name in path:
            hint = typing.get_type_hints(hint).get(name) if dataclasses.is_dataclass(hint) else None
        if hint is not None:
            return hint
    return None
