"""The GPT-2 MoE backbone: upcycled from the dense model, it is the dense model before training."""

import contextlib
import copy

import pytest
import torch
from conftest import grads, loud_hypernetwork
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from hypermoe.backbones.causal_lm import MoECausalLM
from hypermoe.backbones.gpt2 import patch_mlps
from hypermoe.backbones.patching import RoutingContext, hyper_experts_kept
from hypermoe.moe import sum_aux_losses
from hypermoe.sample import generate

CONFIG = GPT2Config(vocab_size=64, n_embd=16, n_layer=3, n_head=2, n_positions=32)
NOISY = {"moe_layers": "all", "num_experts": 4, "gating": "noisy"}


@pytest.mark.parametrize(
    "model",
    [{"variant": "topk", **NOISY, "top_k": 1}, {"variant": "topk", **NOISY, "top_k": 2},
     {"variant": "dense_moe", "moe_layers": "all", "num_experts": 4}, {"variant": "ffn", "moe_layers": [0, 2]}],
    ids=["top1", "top2", "dense_moe", "ffn"],
)  # fmt: skip
def test_upcycled_gpt2_equals_dense_gpt2(model):
    dense = GPT2LMHeadModel(CONFIG).eval()
    upcycled = copy.deepcopy(dense)
    stack, blocks = patch_mlps(upcycled, model, RoutingContext.attach(upcycled.transformer))
    upcycled.eval()
    gates = []
    for layer in stack:
        if hasattr(layer, "router"):
            layer.router.register_forward_hook(lambda module, args, routing: gates.append(routing.gates))
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(upcycled(ids).logits, dense(ids).logits, rtol=1e-5, atol=1e-5)
    assert blocks == ([0, 1, 2] if model["moe_layers"] == "all" else [0, 2])
    for block, layer in zip(blocks, stack, strict=True):
        mlp = dense.transformer.h[block].mlp
        for expert in getattr(getattr(layer, "experts", None), "ffns", [layer]):  # every expert a copy
            torch.testing.assert_close(expert.fc_in.weight, mlp.c_fc.weight.t())
            torch.testing.assert_close(expert.fc_out.bias, mlp.c_proj.bias)
    for gate in gates:  # noisy top-k renormalises over the chosen k; dense weights by the softmax
        torch.testing.assert_close(gate.sum(-1), torch.ones(gate.shape[0]))


def test_the_patched_blocks_keep_gpt2s_residual_dropout_in_training():
    dense = GPT2LMHeadModel(CONFIG).train()  # resid_pdrop 0.1
    upcycled = copy.deepcopy(dense)
    patch_mlps(upcycled, {"variant": "ffn", "moe_layers": "all"}, RoutingContext.attach(upcycled.transformer))
    ids = torch.randint(0, 64, (2, 12))
    torch.manual_seed(1)
    expected = dense(ids).logits
    torch.manual_seed(1)  # the same dropout masks, drawn in the same order
    torch.testing.assert_close(upcycled.train()(ids).logits, expected)


def test_hypermoe_starts_near_the_dense_model():
    dense = GPT2LMHeadModel(CONFIG).eval()
    upcycled = copy.deepcopy(dense)
    patch_mlps(upcycled, {"variant": "hypermoe", **NOISY, "top_k": 1}, RoutingContext.attach(upcycled.transformer))
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        difference = (upcycled.eval()(ids).logits - dense(ids).logits).abs().max()
    assert 0 < difference < 1e-2  # the HyperExpert is there, and starts ~1e-3 (hyperfanin init)


def _hypermoe_gpt2(top_k: int = 2) -> tuple[GPT2LMHeadModel, list[int]]:
    """Tiny GPT-2 with HyperMoE in every block, deterministic in training mode (no dropout, Switch
    gating without jitter), HyperExperts large enough to show; and its hypernetwork's call count."""
    torch.manual_seed(0)
    config = GPT2Config(**{**CONFIG.to_dict(), "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})
    lm = GPT2LMHeadModel(config)
    model = {"variant": "hypermoe", "moe_layers": "all", "num_experts": 4, "top_k": top_k, "gating": "switch"}
    stack, _ = patch_mlps(lm, model, RoutingContext.attach(lm.transformer))
    return lm.train(), loud_hypernetwork(stack[0].hypernetwork, std=0.3)


def checkpoint_activations(model: torch.nn.Module, reentrant: bool) -> None:
    """transformers' activation checkpointing, by its new name where it has one (5.25: the old name warns)."""
    kwargs = {"use_reentrant": reentrant}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@pytest.mark.parametrize("reentrant", [False, True])
def test_hypermoe_trains_under_gradient_checkpointing(reentrant):
    """A checkpointing stack leaves generation to its layers: a reentrant recompute would run
    backward through one shared generation once per layer ("backward through the graph a second time")."""
    ids = torch.randint(0, 64, (2, 12))
    plain, _ = _hypermoe_gpt2()
    plain(ids).logits.square().mean().backward()
    checkpointed, calls = _hypermoe_gpt2()
    checkpoint_activations(checkpointed, reentrant)
    checkpointed(ids).logits.square().mean().backward()
    expected, got = grads(plain), grads(checkpointed)
    assert got.keys() == expected.keys() and any("hypernetwork" in name for name in got)
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, msg=name)
    calls.clear()
    with torch.no_grad():  # nothing is recomputed in evaluation: one call for the stack again
        checkpointed.eval()(ids)
    assert len(calls) == 1


def test_aux_losses_under_reentrant_checkpointing_are_an_error_not_a_silent_zero():
    """Reentrant checkpointing runs the first forward under no_grad: the aux losses the layers
    record then carry no gradient, which would leave the routers without their aux-loss gradient."""
    ids = torch.randint(0, 64, (2, 12))
    lm, _ = _hypermoe_gpt2()
    checkpoint_activations(lm, reentrant=False)
    lm(ids)
    assert all(loss.requires_grad for loss in sum_aux_losses(lm).values())
    checkpoint_activations(lm, reentrant=True)
    lm(ids)
    with pytest.raises(RuntimeError, match=r"aux loss 'balance' of MoE layer 'transformer.h.0.mlp.*use_reentrant"):
        sum_aux_losses(lm)


def test_a_patched_model_deep_copies_after_a_training_step():
    """What weight averaging does mid-training: the copy, with a context of its own, computes the same."""
    lm, _ = _hypermoe_gpt2()
    ids = torch.randint(0, 64, (2, 12))
    lm(ids, labels=ids).loss.backward()
    twin = copy.deepcopy(lm)
    assert twin.transformer.routing_context.layers[0] is twin.transformer.h[0].mlp[0].layer
    lm.eval(), twin.eval()
    with torch.no_grad():
        torch.testing.assert_close(twin(ids).logits, lm(ids).logits)


def test_attaching_twice_keeps_one_context_and_one_pair_of_hooks():
    lm, _ = _hypermoe_gpt2()
    hooks = len(lm.transformer._forward_pre_hooks), len(lm.transformer._forward_hooks)
    assert RoutingContext.attach(lm.transformer) is lm.transformer.routing_context
    assert (len(lm.transformer._forward_pre_hooks), len(lm.transformer._forward_hooks)) == hooks == (1, 1)


def test_a_deep_copy_generates_its_own_hyper_experts(monkeypatch):
    """The copy's stack refreshes the copy's context: after the copy's hypernetwork changes, its
    output is what per-layer generation in the copy gives, and the original is untouched."""
    lm, _ = _hypermoe_gpt2()
    ids = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        before = lm(ids).logits
        twin = copy.deepcopy(lm)
        assert twin.transformer.routing_context is not lm.transformer.routing_context
        for head in twin.transformer.h[0].mlp[0].layer.hypernetwork.heads():
            head.weight.mul_(5)
        after = twin(ids).logits
        torch.testing.assert_close(lm(ids).logits, before)
        monkeypatch.setattr("hypermoe.backbones.patching.generate_every_set", lambda layers: {})
        torch.testing.assert_close(after, twin(ids).logits)
    assert (after - before).abs().max() > 1e-3


def test_independent_experts_and_routers_are_drawn_as_gpt2_draws_its_mlps():
    config = GPT2Config(vocab_size=64, n_embd=64, n_layer=8, n_head=2, n_positions=32, initializer_range=0.05)
    lm = GPT2LMHeadModel(config)
    model = {"variant": "topk", "moe_layers": "all", "num_experts": 4, "top_k": 1}
    stack, _ = patch_mlps(lm, model, RoutingContext.attach(lm.transformer), expert_init="independent")
    for layer in stack:
        assert layer.router.weight.std().item() == pytest.approx(0.05, rel=0.1)  # near-uniform routing
        for expert in layer.experts.ffns:  # GPT-2's residual projection scaled by 1 / sqrt(2 n_layer) = 1/4
            assert expert.fc_in.weight.std().item() == pytest.approx(0.05, rel=0.05)
            assert expert.fc_out.weight.std().item() == pytest.approx(0.05 / 4, rel=0.05)
            assert not expert.fc_in.bias.any() and not expert.fc_out.bias.any()


def test_cached_decoding_of_a_left_padded_batch_gives_the_logits_of_decoding_without_the_cache():
    lm = GPT2LMHeadModel(CONFIG)
    model = {"variant": "hypermoe", "moe_layers": "all", "num_experts": 4, "top_k": 1}
    patch_mlps(lm, model, RoutingContext.attach(lm.transformer), expert_init="independent")
    ids = torch.randint(1, 64, (2, 6))
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # with the cache, each new token comes with the mask of every position so far
    settings = {"max_new_tokens": 3, "do_sample": False, "pad_token_id": 0}
    settings |= {"output_logits": True, "return_dict_in_generate": True}
    cached = lm.eval().generate(ids, attention_mask=mask, use_cache=True, **settings)
    uncached = lm.generate(ids, attention_mask=mask, use_cache=False, **settings)
    for step, expected in zip(cached.logits, uncached.logits, strict=True):
        torch.testing.assert_close(step, expected)


def test_sampling_generates_the_hyper_experts_once_and_draws_the_same_tokens(monkeypatch):
    """Every sampling step calls the stack again on the same parameters: the HyperExperts of the
    first call serve the later ones (``hyper_experts_kept``), with the tokens per-call generation draws."""
    lm, calls = _hypermoe_gpt2()
    net = MoECausalLM(lm, nn.ModuleList(), []).eval()
    start = torch.randint(0, 64, (3, 4))

    def sample() -> torch.Tensor:
        return generate(net, start, 6, 8, temperature=1.0, top_k=None, generator=torch.Generator().manual_seed(0))

    kept = sample()
    assert len(calls) == 1
    monkeypatch.setattr("hypermoe.sample.hyper_experts_kept", lambda net: contextlib.nullcontext())
    assert torch.equal(sample(), kept) and len(calls) == 1 + 6  # one generation per step without it


def test_kept_hyper_experts_are_generated_again_when_what_they_come_from_changes():
    """Inside ``hyper_experts_kept`` a call without gradients reuses the HyperExperts until a step
    changes the hypernetwork or autocast changes; a call with gradients generates its own graph."""
    lm, calls = _hypermoe_gpt2()
    hypernetwork = lm.transformer.h[0].mlp[0].layer.hypernetwork
    optimizer = torch.optim.SGD(hypernetwork.parameters(), lr=0.1)
    ids = torch.randint(0, 64, (2, 8))
    with hyper_experts_kept(lm):
        with torch.no_grad():
            first = lm(ids).logits
            assert torch.equal(lm(ids).logits, first) and len(calls) == 1
        lm(ids).logits.square().sum().backward()
        assert len(calls) == 2 and hypernetwork.w_down_head.weight.grad.abs().max() > 0
        optimizer.step()
        with torch.no_grad():
            stepped = lm(ids).logits
            assert len(calls) == 3 and (stepped - first).abs().max() > 1e-3
            with torch.autocast("cpu", dtype=torch.bfloat16):
                lm(ids)
            assert len(calls) == 4
    with torch.no_grad():
        torch.testing.assert_close(lm(ids).logits, stepped, rtol=0, atol=0)


def test_the_outermost_kept_block_drops_the_hyper_experts_even_on_an_error():
    lm, calls = _hypermoe_gpt2()
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        with hyper_experts_kept(lm):
            lm(ids)
            with hyper_experts_kept(lm):
                lm(ids)
            lm(ids)  # the inner block's end leaves the outer one's
        assert len(calls) == 1
        with pytest.raises(RuntimeError, match="stop"), hyper_experts_kept(lm):
            lm(ids)
            raise RuntimeError("stop")
        assert len(calls) == 2 and lm.transformer.routing_context.keeping == 0
        lm(ids)
        assert len(calls) == 3


def test_a_model_made_under_inference_mode_generates_at_every_call():
    """Its parameters keep no version counter, so nothing would tell a change: nothing is kept."""
    ids = torch.randint(0, 64, (2, 8))
    with torch.inference_mode():
        lm, calls = _hypermoe_gpt2()
        with hyper_experts_kept(lm):
            lm(ids)
            lm(ids)
    assert len(calls) == 2
