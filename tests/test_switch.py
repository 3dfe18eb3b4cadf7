"""The Switch backbone: our top-1 layer swapped in gives transformers' model back exactly."""

import copy
import dataclasses

import pytest
import torch
import transformers
from conftest import loud_hypernetwork
from packaging.version import Version
from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration
from transformers.models.switch_transformers.modeling_switch_transformers import (
    SwitchTransformersSparseMLP,
    load_balancing_loss_func,
    router_z_loss_func,
)

from hypermoe.backbones.patching import RoutingContext
from hypermoe.backbones.seq2seq import build_seq2seq
from hypermoe.backbones.switch import _copy_sparse, patch_stack
from hypermoe.lit_module import parameter_groups
from hypermoe.moe import TopKMoE, TopKSettings
from hypermoe.moe.build import VARIANTS, Variant
from hypermoe.moe.losses import load_balancing_loss

# 4 blocks per stack, blocks 1 and 3 sparse (switch-base-8's every-other placement); capacity
# of 64 per sequence never binds on 10 tokens, so transformers drops nothing, as our dropless layer
CONFIG = {"vocab_size": 100, "d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 4, "num_decoder_layers": 4,
          "num_heads": 2, "num_experts": 4, "num_sparse_encoder_layers": 2, "num_sparse_decoder_layers": 2,
          "expert_capacity": 64, "decoder_start_token_id": 0}  # fmt: skip
TOPK = {"variant": "topk", "moe_layers": "sparse", "num_experts": 4, "top_k": 1, "gating": "switch",
        "capacity_factor_train": None, "capacity_factor_eval": None, "jitter_eps": None,
        "balance_group": "sequence", "dropped_tokens": "input"}  # fmt: skip
# What transformers' Switch layer outputs for a token over capacity: its input times its router
# probability up to 4.51, zero from 4.52.
TRANSFORMERS_DROPPED_TOKENS = "zero" if Version(transformers.__version__) >= Version("4.52") else "input"


def _patched(model: dict):
    reference = SwitchTransformersForConditionalGeneration(SwitchTransformersConfig(**CONFIG)).eval()
    ours = copy.deepcopy(reference)
    layers = []
    for name in ("encoder", "decoder"):
        stack = getattr(ours, name)
        stack_layers, blocks = patch_stack(stack, model, RoutingContext.attach(stack))
        assert blocks == [1, 3]
        layers += list(stack_layers)
    return reference, ours.eval(), layers


@pytest.mark.parametrize("balance_group", ["sequence", "batch"])
def test_swapped_topk_gives_transformers_logits_and_aux_losses(balance_group):
    reference, ours, layers = _patched({**TOPK, "balance_group": balance_group})
    inputs, labels = torch.randint(2, 100, (3, 10)), torch.randint(2, 100, (3, 5))
    with torch.no_grad():
        expected = reference(input_ids=inputs, labels=labels, output_router_logits=True)
        logits = ours(input_ids=inputs, labels=labels).logits
    torch.testing.assert_close(logits, expected.logits, rtol=0, atol=1e-6)
    # transformers' own loss functions on its own router logits (b, t, e), layer by layer: its
    # balance loss takes each sequence as a group; the batch as one group is (1, b * t, e)
    router_logits = [*expected.encoder_router_logits, *expected.decoder_router_logits]
    assert len(router_logits) == len(layers) == 4
    for layer, layer_logits in zip(layers, router_logits, strict=True):
        grouped = layer_logits if balance_group == "sequence" else layer_logits.reshape(1, -1, CONFIG["num_experts"])
        torch.testing.assert_close(layer.aux_losses["z"], router_z_loss_func(layer_logits))
        balance = load_balancing_loss_func(grouped.softmax(-1), grouped.argmax(-1))
        torch.testing.assert_close(layer.aux_losses["balance"], balance)
    # transformers' stack-level z-loss is the mean over the stack's layers
    torch.testing.assert_close(expected.encoder_z_loss, (layers[0].aux_losses["z"] + layers[1].aux_losses["z"]) / 2)


def test_padding_is_not_routed_and_does_not_change_real_positions():
    _, ours, layers = _patched(TOPK)
    inputs = torch.randint(2, 100, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    labels = torch.randint(2, 100, (2, 4))
    routed = []
    layers[0].router.register_forward_hook(lambda module, args, output: routed.append(int(args[1].sum())))
    with torch.no_grad():
        padded = ours(input_ids=inputs, attention_mask=mask, labels=labels).logits
        alone = ours(input_ids=inputs[1:, :5], labels=labels[1:]).logits
    torch.testing.assert_close(padded[1:], alone, rtol=1e-5, atol=1e-5)
    assert routed == [13, 5]  # the real encoder tokens: 8 + 5, then 5


def _sparse_mlp(expert_capacity: int) -> SwitchTransformersSparseMLP:
    config = SwitchTransformersConfig(**{**CONFIG, "expert_capacity": expert_capacity, "router_jitter_noise": 0.0})
    return SwitchTransformersSparseMLP(config).eval()


def _ours_from(reference: SwitchTransformersSparseMLP, **layer_kwargs) -> TopKMoE:
    """Our top-1 layer with the router and experts of transformers' Switch layer."""
    ours = TopKMoE(
        TopKSettings(num_experts=4, top_k=1, **layer_kwargs), CONFIG["d_model"], CONFIG["d_ff"], "relu", False
    ).eval()
    _copy_sparse(reference, ours)
    return ours


def test_balance_loss_per_sequence_on_padded_batches_is_transformers_on_each_sequence_alone():
    layer = _ours_from(_sparse_mlp(64), balance_group="sequence")
    x = torch.randn(3, 7, CONFIG["d_model"])
    lengths = [7, 4, 2]
    mask = torch.arange(7) < torch.tensor(lengths).unsqueeze(-1)  # (3, 7)
    with torch.no_grad():
        layer(x, mask)
    logits = x @ layer.router.weight.t()  # (3, 7, e)
    # transformers' function counts padding as tokens (it has no mask): ours equals the mean of
    # transformers' on each sequence cut to its real tokens, and differs from it on the padded batch
    alone = [
        load_balancing_loss_func(s.softmax(-1), s.argmax(-1))
        for s in (logits[i : i + 1, :n] for i, n in enumerate(lengths))
    ]
    torch.testing.assert_close(layer.aux_losses["balance"], torch.stack(alone).mean())
    padded = load_balancing_loss_func(logits.softmax(-1), logits.argmax(-1))
    assert not torch.isclose(layer.aux_losses["balance"], padded)


def test_at_top_2_transformers_balance_loss_is_twice_ours():
    """transformers' function sums the fraction f over the k choices; ours divides it by k (docs/method.md)."""
    probs = torch.randn(3, 7, 8).softmax(-1)
    chosen = probs.topk(2, dim=-1).indices
    ours = load_balancing_loss(probs.reshape(-1, 8), chosen.reshape(-1, 2), torch.ones(21, dtype=torch.bool), 3)
    torch.testing.assert_close(load_balancing_loss_func(probs, chosen), 2 * ours)


def test_capacity_drops_as_transformers_sparse_mlp():
    """One sequence of 16 tokens, 4 experts: transformers' 2 slots per expert and sequence are our
    capacity factor 0.5 (ceil(0.5 * 16 / 4) = 2); both serve each expert's first two tokens."""
    reference, x = _sparse_mlp(2), torch.randn(1, 16, CONFIG["d_model"])
    with torch.no_grad():
        outputs = {
            rule: _ours_from(reference, capacity_factor_eval=0.5, dropped_tokens=rule)(x) for rule in ("zero", "input")
        }
        expected = reference(x)
        dispatch, top_prob, _ = reference.router(x)  # (1, 16, e) one-hot after capacity, (1, 16, 1)
    dropped = dispatch.sum(-1) == 0  # (1, 16)
    assert 0 < dropped.sum() < 16
    torch.testing.assert_close(outputs[TRANSFORMERS_DROPPED_TOKENS], expected, rtol=0, atol=1e-6)
    # the two rules differ on transformers' dropped tokens alone, by the input times its probability
    torch.testing.assert_close(
        outputs["input"] - outputs["zero"], torch.where(dropped.unsqueeze(-1), top_prob * x, 0.0)
    )


def _tiny_switch(tokenizers_root) -> dict:
    """The backbone config of a random Switch of CONFIG's size, with the T5 tokenizer from the tokenizers folder."""
    return {"pretrained": None, "tokenizer": "google/switch-base-8", "config": CONFIG,
            "tokenizer_fallback": str(tokenizers_root / "t5")}  # fmt: skip


def test_hypermoe_has_one_hypernetwork_per_stack(tokenizers_root):
    backbone = _tiny_switch(tokenizers_root)
    net, _ = build_seq2seq(backbone, {**TOPK, "variant": "hypermoe", "share_hypernetwork": True})
    assert net.moe_names == ["encoder1", "encoder3", "decoder1", "decoder3"]
    encoder, decoder = ({id(layer.hypernetwork) for layer in net.moe[i : i + 2]} for i in (0, 2))
    assert len(encoder) == len(decoder) == 1 and encoder != decoder  # shared within a stack, not across


def test_an_unrouted_variant_starts_a_sparse_block_from_its_expert_0():
    reference = SwitchTransformersForConditionalGeneration(SwitchTransformersConfig(**CONFIG))
    ours = copy.deepcopy(reference)
    layers, blocks = patch_stack(
        ours.encoder, {"variant": "ffn", "moe_layers": "sparse"}, RoutingContext.attach(ours.encoder)
    )
    for block, layer in zip(blocks, layers, strict=True):
        expert = reference.encoder.block[block].layer[-1].mlp.experts["expert_0"]
        assert torch.equal(layer.fc_in.weight, expert.wi.weight) and torch.equal(layer.fc_out.weight, expert.wo.weight)


def test_weight_decay_leaves_biases_norms_and_relative_position_tables_alone(tokenizers_root):
    """As transformers' Trainer, which the Switch recipe (weight decay 0.1) comes from."""
    backbone = _tiny_switch(tokenizers_root)
    net, _ = build_seq2seq(backbone, {**TOPK, "variant": "hypermoe", "share_hypernetwork": True})
    names = {id(parameter): name for name, parameter in net.named_parameters()}
    decayed, undecayed = ({names[id(p)] for p in group["params"]} for group in parameter_groups(net))
    tables = {name for name in names.values() if name.endswith("relative_attention_bias.weight")}
    assert len(tables) == 2 and tables <= undecayed  # the encoder's and the decoder's
    vectors = {name for name, parameter in net.named_parameters() if parameter.dim() == 1}  # biases, norms
    assert undecayed == vectors | tables and decayed == set(names.values()) - undecayed
    assert "model.shared.weight" in decayed  # embeddings are decayed, as transformers' Trainer does


@pytest.mark.parametrize(
    ("change", "message"),
    [({"gating": "noisy"}, "pretrained routers are softmax"), ({"num_experts": 8}, "the Switch model has 4")],
)
def test_settings_that_cannot_reuse_the_pretrained_routers_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        _patched({**TOPK, **change})


@dataclasses.dataclass
class _AddedSettings(TopKSettings):
    """A variant added to VARIANTS, as a researcher adds one: no list but VARIANTS names it."""


@pytest.fixture
def added_variant(monkeypatch):
    monkeypatch.setitem(VARIANTS, "added", Variant(_AddedSettings, TopKMoE))
    return {**TOPK, "variant": "added"}


def test_a_variant_added_to_variants_takes_the_pretrained_routers_and_experts(added_variant):
    reference, _, layers = _patched(added_variant)
    sparse = reference.encoder.block[1].layer[-1].mlp
    torch.testing.assert_close(layers[0].router.weight, sparse.router.classifier.weight)
    for i, expert in enumerate(layers[0].experts.ffns):  # each its own expert, not expert 0 upcycled
        torch.testing.assert_close(expert.fc_in.weight, sparse.experts[f"expert_{i}"].wi.weight)
    for change, message in (({"gating": "noisy"}, "pretrained routers"), ({"num_experts": 8}, "Switch model has 4")):
        with pytest.raises(ValueError, match=message):
            _patched({**added_variant, **change})


def test_a_model_mapping_without_num_experts_takes_the_variants_default():
    """A caller's mapping may leave num_experts to the settings' default (8): on an 8-expert Switch
    the pretrained routers and experts are still copied."""
    reference = SwitchTransformersForConditionalGeneration(SwitchTransformersConfig(**{**CONFIG, "num_experts": 8}))
    encoder = copy.deepcopy(reference.encoder)
    layers, _ = patch_stack(encoder, {"variant": "topk", "moe_layers": "sparse"}, RoutingContext.attach(encoder))
    sparse = reference.encoder.block[1].layer[-1].mlp
    torch.testing.assert_close(layers[0].router.weight, sparse.router.classifier.weight)
    torch.testing.assert_close(layers[0].experts.ffns[1].fc_in.weight, sparse.experts["expert_1"].wi.weight)


def test_all_blocks_placement_upcycles_the_dense_blocks():
    reference = SwitchTransformersForConditionalGeneration(SwitchTransformersConfig(**CONFIG))
    encoder = copy.deepcopy(reference.encoder)
    layers, blocks = patch_stack(encoder, {**TOPK, "moe_layers": "all"}, RoutingContext.attach(encoder))
    assert blocks == [0, 1, 2, 3]
    dense_wi = reference.encoder.block[0].layer[-1].mlp.wi.weight
    assert all(torch.equal(expert.fc_in.weight, dense_wi) for expert in layers[0].experts.ffns)  # upcycled
    sparse = reference.encoder.block[1].layer[-1].mlp
    torch.testing.assert_close(layers[1].experts.ffns[2].fc_out.weight, sparse.experts["expert_2"].wo.weight)
    torch.testing.assert_close(layers[1].router.weight, sparse.router.classifier.weight)  # pretrained, copied


def test_the_decoder_attention_mask_reaches_the_decoder(tokenizers_root):
    backbone = _tiny_switch(tokenizers_root)
    net = build_seq2seq(backbone, TOPK)[0].eval()
    inputs = {"input_ids": torch.randint(2, 100, (1, 5)), "attention_mask": torch.ones(1, 5, dtype=torch.long),
              "labels": torch.randint(2, 100, (1, 4))}  # fmt: skip
    with torch.no_grad():
        whole = net(**inputs, decoder_attention_mask=torch.ones(1, 4, dtype=torch.long))
        masked = net(**inputs, decoder_attention_mask=torch.tensor([[1, 0, 1, 1]]))
    torch.testing.assert_close(masked[:, :1], whole[:, :1])  # before the masked position: causal anyway
    assert not torch.allclose(masked[:, 2:], whole[:, 2:])  # after it: it is not attended to


@pytest.mark.parametrize("num_beams", [1, 2])
def test_decoding_generates_each_stacks_hyper_experts_once(tokenizers_root, num_beams):
    """generate() calls the decoder once per new token on the same parameters: each stack's
    HyperExperts are generated on its first call and reused, for the tokens and scores that
    generating them at every call gives."""
    net, _ = build_seq2seq(_tiny_switch(tokenizers_root), {**TOPK, "variant": "hypermoe", "share_hypernetwork": True})
    net.eval()
    encoder_calls, decoder_calls = (loud_hypernetwork(net.moe[i].hypernetwork, std=0.3) for i in (0, 2))
    ids = torch.randint(2, 100, (3, 7), generator=torch.Generator().manual_seed(0))
    options = {"max_new_tokens": 5, "min_new_tokens": 5, "num_beams": num_beams, "output_scores": True,
               "return_dict_in_generate": True}  # fmt: skip
    kept = net.generate(ids, torch.ones_like(ids), **options)
    assert (len(encoder_calls), len(decoder_calls)) == (1, 1)
    every_call = net.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **options)
    assert (len(encoder_calls), len(decoder_calls)) == (2, 1 + 5)
    assert torch.equal(kept.sequences, every_call.sequences)
    for ours, theirs in zip(kept.scores, every_call.scores, strict=True):
        assert torch.equal(ours, theirs)
