"""Every model config composes with Hydra and builds the layers it names."""

from pathlib import Path

import pytest
import torch
from conftest import D_MODEL
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import hypermoe.config  # noqa: F401  (registers the config resolvers and the model schemas)
from hypermoe.moe import FFN, settings_from_config, sum_aux_losses, weighted_aux_loss
from hypermoe.moe.build import VARIANTS, stack_from_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(name: str, overrides: list[str] | None = None) -> dict:
    """conf/model/<name>.yaml as the training config composes it (with the tiny backbone)."""
    overrides = [f"model={name}", "backbone=bert_tiny", *(f"model.{o}" for o in overrides or [])]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return OmegaConf.to_container(cfg.model, resolve=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_config_builds_its_variant(shape, variant):
    cfg = _compose(variant)
    assert cfg["variant"] == variant
    sources = [FFN(**shape), FFN(**shape)]
    stack = stack_from_config(cfg, 2, **shape, dense_ffns=sources)
    x = torch.randn(2, 4, D_MODEL)
    for layer in stack:
        assert layer(x).shape == x.shape
    # every loss the layers record has a coefficient in the same config
    weighted_aux_loss(sum_aux_losses(stack), cfg["aux_loss_coefficients"])


def test_two_variants_with_one_settings_class_are_refused_not_confused(shape, monkeypatch):
    """The settings class decides the layer: a variant added with another's class would have
    built that other's layer, so it is refused, naming both."""
    monkeypatch.setitem(VARIANTS, "mine", VARIANTS["topk"])
    with pytest.raises(ValueError, match=r"TopKSettings are the settings of 2 variants in VARIANTS \['mine', 'topk'\]"):
        stack_from_config({"variant": "mine"}, 1, **shape)


def test_swept_keys_override(shape):
    cfg = _compose("hypermoe", ["num_experts=4", "top_k=2", "hypernetwork.bottleneck=16"])
    stack = stack_from_config(cfg, 3, **shape)
    assert stack[0].num_experts == 4 and stack[0].top_k == 2 and stack[0].hypernetwork.bottleneck == 16


def test_adapter_control_matches_hypermoe_parameters_by_default(shape):
    from hypermoe.moe.build import count_parameters

    adapter = stack_from_config(_compose("topk_adapter"), 4, **shape)
    hyper = stack_from_config(_compose("hypermoe"), 4, **shape)
    step = 2 * D_MODEL + 1  # parameters one unit of adapter width adds
    assert abs(count_parameters(adapter) - count_parameters(hyper)) <= 4 * step / 2
    same_width = stack_from_config(_compose("topk_adapter", ["adapter_bottleneck=64"]), 4, **shape)
    assert same_width[0].adapter.down.out_features == 64


# the settings conf/routing/backbone.yaml takes from the backbone; every other one is the settings' default
BACKBONE_ROUTER = ("gating", "dropped_tokens", "jitter_eps", "balance_group")


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_config_holds_the_settings_defaults(variant):
    settings = settings_from_config(_compose(variant))
    from_backbone = {key: getattr(settings, key) for key in BACKBONE_ROUTER if hasattr(settings, key)}
    assert settings == VARIANTS[variant].settings(**from_backbone)


@pytest.mark.parametrize(
    ("override", "refusal"),
    [
        ("model.num_expert=4", "Key 'num_expert' is not in struct"),
        ("model.hypernetwork.bottleneck=wide", "Value 'wide' of type 'str' could not be converted to Integer"),
        ("model.share_hypernetwork=maybe", "Value 'maybe' is not a valid bool"),
        ("model.capacity_factor_train=fast", "Value 'fast' of type 'str' could not be converted to Float"),
    ],
)
def test_hydra_refuses_what_the_settings_do_not_take(override, refusal):
    """The schema made from the settings is Hydra's too: train.py refuses these before it runs."""
    with pytest.raises(ConfigCompositionException) as error:
        _compose("hypermoe", [override.removeprefix("model.")])
    assert refusal in str(error.value.__cause__)
