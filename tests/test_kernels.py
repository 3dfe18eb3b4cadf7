"""The sync-free grouped_mm kernel (the GPU path, run here on CPU) against the loop kernel,
the absence of host synchronisation in its routing hot path, bf16 autocast and torch.compile.

On CUDA a host sync is any op that reads a device value back to decide a shape or a branch:
``.item()``/``.tolist()``/``int(t)`` (aten._local_scalar_dense), ``bool(t)`` (is_nonzero),
nonzero, unique, masked_select, bincount, one_hot. A dispatch mode sees every aten op a
forward and backward run, on any device, so the check runs on CPU.
"""

import pytest
import torch
from conftest import loud_hypernetwork
from torch.utils._python_dispatch import TorchDispatchMode

from hypermoe.backbones.patching import MaskedMoE, RoutingContext
from hypermoe.moe import (
    DenseMoE,
    DenseMoESettings,
    HyperMoE,
    HyperMoESettings,
    HyperNetwork,
    HypernetworkSettings,
    TopKAdapterMoE,
    TopKAdapterSettings,
    TopKMoE,
    TopKSettings,
)
from hypermoe.moe.build import build_moe_stack

HYPER = HypernetworkSettings(selection_dim=8, layer_embedding_dim=4, hidden_dim=8, bottleneck=8)

SYNCING_OPS = {
    "_local_scalar_dense",
    "is_nonzero",
    "nonzero",
    "_unique",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
    "masked_select",
    "bincount",
    "one_hot",
    "equal",
}
D, F, E = 16, 32, 4  # _grouped_mm wants rows of 16-byte multiples


class SyncRecorder(TorchDispatchMode):
    """Records the name of every op in SYNCING_OPS that runs inside it."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._overloadpacket.__name__
        if name in SYNCING_OPS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def _layer(variant: str, kernel: str, top_k: int = 1, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    shape = {"d_model": D, "d_ff": F, "activation": "gelu", "bias": True}
    routed = {"num_experts": E, "top_k": top_k, "kernel": kernel, **kwargs}
    if variant == "topk":
        return TopKMoE(TopKSettings(**routed), **shape)
    if variant == "topk_adapter":
        return TopKAdapterMoE(TopKAdapterSettings(**routed, adapter_bottleneck=8), **shape)
    if variant == "dense_moe":
        return DenseMoE(DenseMoESettings(num_experts=E), **shape)
    hypernetwork = HyperNetwork(D, 1, HYPER)
    layer = HyperMoE(
        HyperMoESettings(**routed, expert_embedding_dim=8), **shape, hypernetwork=hypernetwork, layer_index=0
    )
    # the generated adapter starts near zero: make it large enough to matter in the comparison
    with torch.no_grad():
        for head in hypernetwork.heads():
            head.weight.normal_(std=0.3)
    return layer


def _batch(padding: bool) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(3, 8, D, requires_grad=True)
    mask = torch.ones(3, 8, dtype=torch.bool)
    if padding:
        mask[1, 5:] = False
        mask[2, 2:] = False
    return x, mask


def _run(layer: torch.nn.Module, padding: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output and the gradients of the input and of every parameter, for a fixed upstream."""
    layer.eval()  # no router noise: both kernels route the same tokens
    x, mask = _batch(padding)
    out = layer(x, mask)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return out.detach(), [x.grad, *(p.grad for p in layer.parameters())]


CASES = [
    ("topk", 1, {}),
    ("topk", 2, {}),
    ("topk", 1, {"capacity_factor_eval": 0.5}),  # some assignments dropped
    ("topk_adapter", 1, {}),
    ("hypermoe", 1, {}),
    ("hypermoe", 2, {}),
    ("hypermoe", 2, {"aggregation": "mean"}),
    ("hypermoe", 2, {"aggregation": "all"}),
    ("hypermoe", 1, {"aggregation": "selected", "capacity_factor_eval": 0.5}),
]


@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize(("variant", "top_k", "kwargs"), CASES)
def test_grouped_mm_kernel_equals_loop_kernel(variant, top_k, kwargs, padding):
    out_loop, grads_loop = _run(_layer(variant, "loop", top_k, **kwargs), padding)
    out_mm, grads_mm = _run(_layer(variant, "grouped_mm", top_k, **kwargs), padding)
    torch.testing.assert_close(out_mm, out_loop, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads_mm, grads_loop, strict=True):
        if want is None:  # e.g. the noise weights of an eval-mode router
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("variant", "top_k", "kwargs"), CASES)
def test_grouped_mm_kernel_never_syncs_with_the_host(variant, top_k, kwargs):
    layer = _layer(variant, "grouped_mm", top_k, **kwargs).train()
    x, mask = _batch(padding=True)
    with SyncRecorder() as recorder:
        layer(x, mask).sum().backward()
    assert recorder.seen == []


class _Stack(torch.nn.Module):
    """The smallest transformer-like stack: residual MoE blocks, called with a padding mask."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList()

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x


def test_stack_wide_generation_never_syncs_with_the_host():
    """The backbone path: the stack's hook generates every layer's HyperExperts in one call and
    each MaskedMoE hands its layer its share, all without reading a device value back."""
    shape = {"d_model": D, "d_ff": F, "activation": "gelu", "bias": True}
    settings = HyperMoESettings(num_experts=E, top_k=2, kernel="grouped_mm", hypernetwork=HYPER)
    layers = build_moe_stack(settings, 3, **shape)
    stack = _Stack()
    context = RoutingContext.attach(stack)
    stack.blocks.extend(MaskedMoE(layer, context) for layer in layers)
    calls = loud_hypernetwork(layers[0].hypernetwork, std=0.3)
    x, mask = _batch(padding=True)
    with SyncRecorder() as recorder:
        stack.train()(x, mask).sum().backward()
    assert recorder.seen == [] and len(calls) == 1


def test_the_recorder_sees_the_loop_kernels_syncs():
    """The check above can fail: the loop kernel's per-set HyperExperts (top-2) read the sets
    present back (unique) and count the padding (a scalar read)."""
    layer = _layer("hypermoe", "loop", top_k=2).train()
    x, mask = _batch(padding=True)
    with SyncRecorder() as recorder:
        layer(x, mask).sum().backward()
    assert "_local_scalar_dense" in recorder.seen and "_unique2" in recorder.seen


def test_hypermoe_enumerates_sets_only_when_they_follow_from_the_selection():
    assert _layer("hypermoe", "grouped_mm", 2).set_experts.shape == (6, 2)  # C(4, 2)
    assert len(_layer("hypermoe", "grouped_mm", 2, aggregation="random").set_experts) == 0


@pytest.mark.parametrize("kernel", ["loop", "grouped_mm"])
@pytest.mark.parametrize("variant", ["topk", "topk_adapter", "hypermoe", "dense_moe"])
def test_bf16_autocast_trains_close_to_float32(variant, kernel):
    layer = _layer(variant, kernel).train()  # no jitter, noise or dropout: float32 gives the reference
    x, mask = _batch(padding=True)
    reference = layer(x, mask).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x, mask)
    assert out.dtype == torch.bfloat16 and layer.training
    out.float().sum().backward()
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.05)
    grads = [p.grad for p in layer.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


class _TwoLayerStack(torch.nn.Module):
    """Two HyperMoE layers sharing one hypernetwork, as a backbone stacks them."""

    def __init__(self, kernel: str):
        super().__init__()
        settings = HyperMoESettings(num_experts=E, top_k=2, kernel=kernel, expert_embedding_dim=8, hypernetwork=HYPER)
        self.layers = build_moe_stack(settings, 2, D, F, "gelu", True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x, mask)
        return x


def _compiled_matches_eager(kernel: str, dtype: torch.dtype | None, **compile_kwargs) -> None:
    torch.manual_seed(0)
    model = _TwoLayerStack(kernel).eval()
    x, mask = _batch(padding=True)
    compiled = torch.compile(model, **compile_kwargs)
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        got, want = compiled(x, mask), model(x, mask)
    tolerance = 2e-2 if dtype else 1e-5
    torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)
    got.float().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.slow
def test_torch_compile_captures_the_grouped_mm_kernel_in_one_graph():
    """fullgraph=True fails on any graph break, so this also shows that nothing in the
    forward or backward reads a device value back (aot_eager: the trace, without the
    minutes of C++ compilation inductor takes here; see the slow test)."""
    _compiled_matches_eager("grouped_mm", torch.bfloat16, fullgraph=True, backend="aot_eager")


@pytest.mark.slow
def test_torch_compile_traces_the_loop_kernel():
    """The CPU kernel reads group sizes back (tolist): it compiles with graph breaks."""
    _compiled_matches_eager("loop", None, backend="aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize(("kernel", "dtype"), [("grouped_mm", torch.bfloat16), ("loop", None)])
def test_torch_compile_with_inductor(kernel, dtype):
    _compiled_matches_eager(kernel, dtype, fullgraph=kernel == "grouped_mm")
