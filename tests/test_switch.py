"""The Switch backbone: our top-1 layer swapped in gives transformers' model back exactly."""

import copy

import pytest
import torch
from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration
from transformers.models.switch_transformers.modeling_switch_transformers import (
    load_balancing_loss_func,
    router_z_loss_func,
)

from hypermoe.backbones.patching import RoutingContext
from hypermoe.backbones.seq2seq import build_seq2seq
from hypermoe.backbones.switch import patch_stack

# 4 blocks per stack, blocks 1 and 3 sparse (switch-base-8's every-other placement); capacity
# of 64 per sequence never binds on 10 tokens, so transformers drops nothing, as our dropless layer
CONFIG = {"vocab_size": 100, "d_model": 16, "d_kv": 4, "d_ff": 32, "num_layers": 4, "num_decoder_layers": 4,
          "num_heads": 2, "num_experts": 4, "num_sparse_encoder_layers": 2, "num_sparse_decoder_layers": 2,
          "expert_capacity": 64, "decoder_start_token_id": 0}  # fmt: skip
TOPK = {"variant": "topk", "moe_layers": "sparse", "num_experts": 4, "top_k": 1, "gating": "switch",
        "capacity_factor_train": None, "capacity_factor_eval": None, "jitter_eps": None}  # fmt: skip


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


def test_swapped_topk_gives_transformers_logits_and_aux_losses():
    reference, ours, layers = _patched(TOPK)
    inputs, labels = torch.randint(2, 100, (3, 10)), torch.randint(2, 100, (3, 5))
    with torch.no_grad():
        expected = reference(input_ids=inputs, labels=labels, output_router_logits=True)
        logits = ours(input_ids=inputs, labels=labels).logits
    torch.testing.assert_close(logits, expected.logits, rtol=0, atol=1e-6)
    # transformers' own loss functions on its own router logits, layer by layer (batch as one group)
    router_logits = [*expected.encoder_router_logits, *expected.decoder_router_logits]
    assert len(router_logits) == len(layers) == 4
    for layer, layer_logits in zip(layers, router_logits, strict=True):
        flat = layer_logits.reshape(1, -1, CONFIG["num_experts"])
        torch.testing.assert_close(layer.aux_losses["z"], router_z_loss_func(flat))
        balance = load_balancing_loss_func(flat.softmax(-1), flat.argmax(-1))
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


def test_hypermoe_has_one_hypernetwork_per_stack(tokenizers_root):
    backbone = {"pretrained": None, "tokenizer": "google/switch-base-8", "config": CONFIG,
                "tokenizer_fallback": str(tokenizers_root / "t5")}  # fmt: skip
    net, _ = build_seq2seq(backbone, {**TOPK, "variant": "hypermoe", "share_hypernetwork": True})
    assert net.moe_names == ["encoder1", "encoder3", "decoder1", "decoder3"]
    encoder, decoder = ({id(layer.hypernetwork) for layer in net.moe[i : i + 2]} for i in (0, 2))
    assert len(encoder) == len(decoder) == 1 and encoder != decoder  # shared within a stack, not across


@pytest.mark.parametrize(
    ("change", "message"),
    [({"gating": "noisy"}, "pretrained routers are softmax"), ({"num_experts": 8}, "the Switch model has 4")],
)
def test_settings_that_cannot_reuse_the_pretrained_routers_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        _patched({**TOPK, **change})


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
