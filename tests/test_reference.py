"""Every fast path of TopKMoE and HyperMoE against the per-token reference (hypermoe.moe.reference):
the same parameters give the same output, aux losses and gradients, to float rounding."""

from collections.abc import Callable

import pytest
import torch
from conftest import D_MODEL, grads, loud_hypernetwork

from hypermoe.moe import (
    AGGREGATIONS,
    HyperMoE,
    HyperMoESettings,
    HyperNetwork,
    HypernetworkSettings,
    TopKMoE,
    TopKSettings,
    build_moe_stack,
    reference,
)
from hypermoe.moe.router import NoisyTopKRouter
from hypermoe.moe.settings import GENERATIONS

B, T, N = 2, 6, 4
# r * 4 bytes: grouped_mm
HYPER = HypernetworkSettings(selection_dim=8, hidden_dim=8, bottleneck=8, layer_embedding_dim=3)
SEED = 3
KERNELS = [
    "loop",
    pytest.param(
        "grouped_mm",
        marks=pytest.mark.skipif(
            not hasattr(torch, "_grouped_mm"), reason="this torch lacks torch._grouped_mm, the CUDA kernel's op"
        ),
    ),
]
Forward = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The reference runs thousands of tiny ops: one intra-op thread runs them several times faster
    than a pool whose threads wait on each other (ten times on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, d) and its padding mask, the second sequence padded after 4 tokens."""
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 4:] = False
    return torch.randn(B, T, D_MODEL), mask


def _router_draw(layer: TopKMoE) -> torch.Tensor | None:
    """What the layer's router draws first in a training forward, from the global generator:
    noisy gating's standard normals (B, T, N), or the jitter factors (B, T, d)."""
    if not layer.training:
        return None
    if isinstance(layer.router, NoisyTopKRouter):
        return torch.randn(B, T, N)
    eps = layer.router.jitter_eps
    return torch.empty(B, T, D_MODEL).uniform_(1 - eps, 1 + eps)


def _spread_noisy_router(layer: TopKMoE) -> None:
    """A noisy router starts at zero, where every expert ties: give it distinct logits."""
    if isinstance(layer.router, NoisyTopKRouter):
        with torch.no_grad():
            layer.router.weight.normal_(std=0.5)
            layer.router.noise_weight.normal_(std=0.5)


def _run(module: torch.nn.Module, forward: Forward, x: torch.Tensor) -> tuple:
    """Output, aux losses, and the gradients of x and of every parameter, of a fixed upstream
    gradient plus the aux losses, after seeding the global generator."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    torch.manual_seed(SEED)
    y, aux = forward(x)
    upstream = torch.linspace(-1, 1, y.numel()).view_as(y)
    ((y * upstream).sum() + sum(aux.values())).backward()
    # an expert no token chose has a zero gradient on the fast path and none on the reference
    zeros = {name: torch.zeros_like(p) for name, p in module.named_parameters()}
    return y.detach(), {name: loss.detach() for name, loss in aux.items()}, {"x": x.grad, **zeros, **grads(module)}


def _assert_matches(module: torch.nn.Module, fast: Forward, slow: Forward, x: torch.Tensor) -> None:
    y_fast, aux_fast, grads_fast = _run(module, fast, x)
    y_ref, aux_ref, grads_ref = _run(module, slow, x)
    torch.testing.assert_close(y_fast, y_ref, atol=1e-5, rtol=1e-5)
    assert aux_fast.keys() == aux_ref.keys()
    for name, loss in aux_ref.items():
        torch.testing.assert_close(aux_fast[name], loss, atol=1e-6, rtol=1e-5, msg=name)
    assert grads_fast.keys() == grads_ref.keys()
    for name, grad in grads_ref.items():
        # float32 gradients reach ~1e1 here, so their rounding is relative to that scale
        scale = max(1.0, grad.abs().max().item())
        torch.testing.assert_close(grads_fast[name], grad, atol=1e-5 * scale, rtol=1e-5, msg=name)


def _assert_topk_matches(layer: TopKMoE, x: torch.Tensor, mask: torch.Tensor) -> None:
    _assert_matches(
        layer,
        lambda x: (layer(x, mask), layer.aux_losses),
        lambda x: reference.topk_moe(layer, x, mask, router_noise=_router_draw(layer)),
        x,
    )


ROUTERS = {
    "switch": {"gating": "switch"},
    "switch_per_sequence": {"gating": "switch", "balance_group": "sequence"},
    "renorm": {"gating": "renorm"},
    "noisy": {"gating": "noisy"},
}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_topk_matches_the_reference(shape, batch, router, top_k, training, kernel):
    jitter = {} if router == "noisy" else {"jitter_eps": 0.1}  # noisy gating has its own noise
    layer = TopKMoE(TopKSettings(num_experts=N, top_k=top_k, kernel=kernel, **ROUTERS[router], **jitter), **shape)
    _spread_noisy_router(layer)
    _assert_topk_matches(layer.train(training), *batch)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dropped_tokens", ["zero", "input"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_topk_under_a_capacity_limit_matches_the_reference(shape, batch, top_k, dropped_tokens, kernel):
    settings = TopKSettings(
        num_experts=N, top_k=top_k, kernel=kernel, capacity_factor_eval=0.5, dropped_tokens=dropped_tokens
    )
    layer = TopKMoE(settings, **shape).eval()
    _assert_topk_matches(layer, *batch)
    assert layer.routing_stats["dropped_fraction"] > 0, "the limit must drop assignments for this test to mean anything"


def _hyper_layer(shape, top_k: int, kernel: str, **kwargs) -> HyperMoE:
    """Layer 1 of a two-layer hypernetwork, its heads redrawn so the HyperExpert shows."""
    layer = HyperMoE(
        HyperMoESettings(num_experts=N, top_k=top_k, kernel=kernel, expert_embedding_dim=6, **kwargs),
        **shape,
        hypernetwork=HyperNetwork(D_MODEL, 2, HYPER),
        layer_index=1,
    )
    loud_hypernetwork(layer.hypernetwork, std=0.3)
    return layer


def _assert_hypermoe_matches(layer: HyperMoE, x: torch.Tensor, mask: torch.Tensor) -> None:
    _assert_matches(
        layer,
        lambda x: (layer(x, mask), layer.aux_losses),
        lambda x: reference.hypermoe(layer, x, mask, router_noise=_router_draw(layer)),
        x,
    )
    with torch.no_grad():
        torch.manual_seed(SEED)
        with_hyper = reference.hypermoe(layer, x, mask, router_noise=_router_draw(layer))[0]
        torch.manual_seed(SEED)
        without = reference.topk_moe(layer, x, mask, router_noise=_router_draw(layer))[0]
    assert (with_hyper - without)[mask].abs().mean() > 0.1, "the HyperExpert must contribute to this test"


# gate_weighted has no per-set path (each token weighs the embeddings by its own probabilities)
PATHS = [(a, g) for a in AGGREGATIONS for g in GENERATIONS if (a, g) != ("gate_weighted", "per_set")]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize(("aggregation", "generation"), PATHS)
def test_hypermoe_matches_the_reference(shape, batch, aggregation, generation, top_k, kernel):
    """In eval, where the ``random`` aggregation's draw is fixed."""
    layer = _hyper_layer(shape, top_k, kernel, aggregation=aggregation, generation=generation).eval()
    _assert_hypermoe_matches(layer, *batch)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    ("aggregation", "generation"),
    [("sum", generation) for generation in GENERATIONS] + [("gate_weighted", "per_token")],
)
def test_hypermoe_training_with_router_noise_and_drops_matches_the_reference(
    shape, batch, aggregation, generation, kernel
):
    """The HyperExpert also runs on the tokens their experts dropped; gate_weighted weighs the
    embeddings by the clean probabilities, not the noisy ones."""
    layer = _hyper_layer(
        shape,
        2,
        kernel,
        aggregation=aggregation,
        generation=generation,
        gating="noisy",
        capacity_factor_train=0.5,
        dropped_tokens="input",
    )
    _spread_noisy_router(layer)
    _assert_hypermoe_matches(layer.train(), *batch)
    assert layer.routing_stats["dropped_fraction"] > 0


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("share", [True, False], ids=["shared", "unshared"])
def test_a_residual_stack_matches_the_reference(shape, batch, share, kernel):
    """Two layers on one hypernetwork (layer embeddings 0 and 1) or on one each, their
    gradients meeting in the shared one."""
    settings = HyperMoESettings(
        num_experts=N, top_k=2, kernel=kernel, expert_embedding_dim=6, share_hypernetwork=share, hypernetwork=HYPER
    )
    stack = build_moe_stack(settings, 2, **shape).eval()
    for layer in stack:
        loud_hypernetwork(layer.hypernetwork, std=0.3)
    x, mask = batch

    def residual(layer_forward: Callable) -> Forward:
        def forward(h: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            aux = {}
            for i, layer in enumerate(stack):
                out, layer_aux = layer_forward(layer, h)
                h = h + out
                aux |= {f"{i}/{name}": loss for name, loss in layer_aux.items()}
            return h, aux

        return forward

    fast = residual(lambda layer, h: (layer(h, mask), layer.aux_losses))
    slow = residual(lambda layer, h: reference.hypermoe(layer, h, mask))
    _assert_matches(stack, fast, slow, x)
