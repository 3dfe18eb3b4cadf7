"""Bad arguments fail at construction, with a message naming the argument."""

import pytest
import torch
from conftest import D_MODEL

from hypermoe.moe import (
    FFN,
    HyperMoE,
    HyperMoESettings,
    HyperNetwork,
    HypernetworkSettings,
    TopKAdapterSettings,
    TopKMoE,
    TopKSettings,
    settings_from_config,
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_experts": 4, "top_k": 5}, "top_k=5 must be <= num_experts=4"),
        ({"num_experts": 4, "top_k": 0}, "top_k must be an integer >= 1"),
        ({"num_experts": 0, "top_k": 1}, "num_experts must be an integer >= 1"),
        ({"num_experts": 4, "top_k": 1, "capacity_factor_train": -1.0}, "capacity_factor_train must be a number > 0"),
        ({"num_experts": 4, "top_k": 1, "capacity_factor_eval": 0.0}, "capacity_factor_eval must be a number > 0"),
        ({"num_experts": 4, "top_k": 1, "gating": "softmax"}, "gating='softmax' is not one of"),
        ({"num_experts": 4, "top_k": 1, "gating": "noisy", "jitter_eps": 0.1}, "jitter_eps applies to"),
        ({"num_experts": 4, "top_k": 1, "balance_group": "token"}, "balance_group='token' is not one of"),
        ({"num_experts": 4, "top_k": 1, "gating": "noisy", "balance_group": "sequence"}, "use balance_group='batch'"),
        ({"num_experts": 4, "top_k": 1, "dropped_tokens": "identity"}, "dropped_tokens='identity' is not one of"),
        ({"num_experts": 4, "top_k": 1, "activation": "swish"}, "activation='swish' is not one of"),
        ({"num_experts": 4, "top_k": 1, "d_model": 0}, "d_model must be an integer >= 1"),
        ({"num_experts": 4, "top_k": 1, "capacity_factor_train": "2"}, "capacity_factor_train must be a number"),
        ({"num_experts": 4, "top_k": True}, "top_k must be an integer >= 1"),
    ],
)
def test_bad_topk_arguments(shape, kwargs, message):
    shape = {**shape, **{k: v for k, v in kwargs.items() if k in shape}}
    kwargs = {k: v for k, v in kwargs.items() if k not in shape}
    with pytest.raises(ValueError, match=message):
        TopKMoE(TopKSettings(**kwargs), **shape)


def test_dense_ffn_of_another_width_is_rejected(shape):
    wider = FFN(**{**shape, "d_model": D_MODEL * 2})
    with pytest.raises(ValueError, match=r"dense_ffn has d_model=32, d_ff=32; the experts need d_model=16"):
        TopKMoE(TopKSettings(num_experts=4, top_k=1), **shape, dense_ffn=wider)
    relu = FFN(**{**shape, "activation": "relu"})
    with pytest.raises(ValueError, match="dense_ffn has activation='relu'"):
        TopKMoE(TopKSettings(num_experts=4, top_k=1), **shape, dense_ffn=relu)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aggregation": "max"}, "aggregation='max' is not one of"),
        ({"generation": "per_batch"}, "generation='per_batch' is not one of"),
        ({"aggregation": "gate_weighted"}, "use generation='per_token'"),
        ({"layer_index": 3}, "layer_index=3 is outside the hypernetwork's 2 layers"),
    ],
)
def test_bad_hypermoe_arguments(shape, kwargs, message):
    layer_index = kwargs.pop("layer_index", 0)
    with pytest.raises(ValueError, match=message):
        settings = HyperMoESettings(num_experts=4, top_k=1, **kwargs)
        HyperMoE(settings, **shape, hypernetwork=HyperNetwork(D_MODEL, 2), layer_index=layer_index)


def test_hypernetwork_of_another_width_is_rejected(shape):
    with pytest.raises(ValueError, match=r"hypernetwork\.d_model=8 does not match d_model=16"):
        HyperMoE(HyperMoESettings(num_experts=4, top_k=1), **shape, hypernetwork=HyperNetwork(8, 1), layer_index=0)
    with pytest.raises(ValueError, match="bottleneck must be an integer >= 1"):
        HyperNetwork(D_MODEL, 1, HypernetworkSettings(bottleneck=0))


def test_stack_builder_rejects_misplaced_settings(shape):
    with pytest.raises(ValueError, match="variant='moe' is not one of"):
        settings_from_config({"variant": "moe"})
    with pytest.raises(ValueError, match=r"variant='topk' has no hypernetwork"):
        settings_from_config({"variant": "topk", "num_experts": 4, "top_k": 1, "hypernetwork": {}})
    with pytest.raises(ValueError, match=r"variant='dense_moe' takes no \['top_k'\]"):
        settings_from_config({"variant": "dense_moe", "num_experts": 4, "top_k": 1})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TopKSettings(jitter_eps="abc"), "jitter_eps='abc' must be of type float | None"),
        (lambda: TopKSettings(noise_epsilon="0.1"), "noise_epsilon='0.1' must be of type float"),
        (lambda: HyperMoESettings(share_hypernetwork="maybe"), "share_hypernetwork='maybe' must be true or false"),
        (lambda: HyperMoESettings(hypernetwork=None), "hypernetwork=None must be of type HypernetworkSettings"),
        (lambda: HypernetworkSettings(hidden_dim=0), "hidden_dim must be an integer >= 1, got 0"),
        (lambda: TopKAdapterSettings(adapter_bottleneck=0), "adapter_bottleneck must be an integer >= 1, got 0"),
        (lambda: HyperMoESettings(num_experts=64), "num_experts=64 > 62"),
        (
            lambda: settings_from_config({"variant": "hypermoe", "hypernetwork": {"width": 3}}),
            r"hypernetwork takes no \['width'\]; it takes \['bottleneck', 'hidden_dim'",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_attention_mask_of_wrong_shape_is_rejected(shape):
    layer = TopKMoE(TopKSettings(num_experts=2, top_k=1), **shape)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 3\), expected \(2, 4\)"):
        layer(torch.randn(2, 4, D_MODEL), torch.ones(2, 3))
