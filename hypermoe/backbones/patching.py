"""What every backbone patch shares: the padding mask the MoE layers need, the choice of
blocks to patch, and transformers' activation names in the layer library's terms."""

import contextlib
import copy
import functools
import inspect
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from hypermoe.errors import ConfigError
from hypermoe.moe.hyper import GeneratedAdapter, HyperMoE, generate_every_set

# transformers' activation names -> the layer library's
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "silu": "silu"}


def layer_activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise ValueError(f"backbone activation {name!r} is not one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class RoutingContext:
    """What the MoE layers of a stack take from the stack's call besides their input
    (transformers call their FFNs with hidden states only):

    - ``attention_mask``: the padding mask of the batch the stack last received, kept until the
      next call so gradient checkpointing recomputes a layer with the same mask. A stack called
      without one (a decoder while generating) routes every position.
    - ``hyper_experts``: every HyperMoE layer's HyperExperts for every possible expert set,
      generated in one hypernetwork call per stack call (``generate_every_set``) instead of one
      per layer, and dropped when the stack returns (the layers' graph holds what backward needs).
      A checkpointing stack gets none: its layers generate their own, since a reentrant
      recompute would run backward through one shared generation once per layer.
      Inside ``hyper_experts_kept`` the calls without gradients keep them instead, and reuse them
      while the parameters they come from, the dtype and autocast stay as they were.

    Both are set by hooks on the stack, so every way of calling it counts. The stack carries its
    context (``routing_context``), so a deep copy of the model gets a fresh context of its own.
    ``layers`` are the stack's MoE layers (``MaskedMoE`` adds each)."""

    def __init__(self) -> None:
        self.attention_mask: Tensor | None = None
        self.hyper_experts: dict[nn.Module, GeneratedAdapter] = {}
        self.layers: list[nn.Module] = []
        self.keeping = 0  # how many hyper_experts_kept blocks are open: the outermost one drops what is kept
        self._kept: tuple[tuple, dict[nn.Module, GeneratedAdapter]] | None = None  # (what they came from, them)

    def __deepcopy__(self, memo: dict) -> "RoutingContext":
        copied = type(self)()  # the mask and HyperExperts belong to the original's last call
        memo[id(self)] = copied
        copied.layers = copy.deepcopy(self.layers, memo)
        return copied

    @classmethod
    def attach(cls, stack: nn.Module) -> "RoutingContext":
        """The stack's context, made and hooked on the first call (a second call returns it)."""
        if isinstance(getattr(stack, "routing_context", None), cls):
            return stack.routing_context
        stack.routing_context = cls()
        stack.register_forward_pre_hook(_before_stack, with_kwargs=True)
        stack.register_forward_hook(_after_stack, always_call=True)
        return stack.routing_context


@functools.cache
def _forward_signature(stack_type: type) -> inspect.Signature:
    return inspect.signature(stack_type.forward)  # where attention_mask sits differs by model


def _before_stack(stack: nn.Module, args: tuple, kwargs: dict) -> None:
    context = stack.routing_context
    call = _forward_signature(type(stack)).bind_partial(stack, *args, **kwargs)
    context.attention_mask = call.arguments.get("attention_mask")
    # with gradients, each call needs its own graph
    source = _generation_source(context.layers) if context.keeping and not torch.is_grad_enabled() else None
    if source is not None:
        if context._kept is None or context._kept[0] != source:
            context._kept = source, generate_every_set(context.layers)
        context.hyper_experts = context._kept[1]
        return
    recomputes = (
        stack.training
        and torch.is_grad_enabled()
        and any(getattr(module, "gradient_checkpointing", False) for module in stack.modules())
    )  # transformers checkpoint only in training, with gradients
    context.hyper_experts = {} if recomputes else generate_every_set(context.layers)


def _after_stack(stack: nn.Module, args: tuple, output: Any) -> None:
    stack.routing_context.hyper_experts = {}


def _generation_source(layers: list[nn.Module]) -> tuple | None:
    """What a stack's every-set HyperExperts follow from besides the layers themselves: the storage
    and in-place version of each parameter they are generated from (an optimizer step or
    load_state_dict bumps the version, .to() moves the storage) and the autocast setting. None for
    parameters made under torch.inference_mode, which keep no version to tell a change by."""
    hyper = [layer for layer in layers if isinstance(layer, HyperMoE)]
    parameters = {
        id(p): p for layer in hyper for part in (layer.hypernetwork, layer.selection) for p in part.parameters()
    }
    if any(p.is_inference() for p in parameters.values()):
        return None
    device = next(iter(parameters.values())).device.type if parameters else "cpu"
    autocast = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device)
    return autocast, *((p.data_ptr(), p._version, p.dtype) for p in parameters.values())


@contextlib.contextmanager
def hyper_experts_kept(model: nn.Module) -> Iterator[None]:
    """Inside the block, each stack of ``model`` keeps the HyperExperts it generates in a call without
    gradients and reuses them in its later calls, until a parameter they come from changes in place
    or moves, or autocast changes: decoding, which calls the decoder once per new token, generates
    them once, not once per token. Calls with gradients generate their own, as outside the block.
    (A change made through ``.data`` escapes torch's version counter: make none inside the block.)"""
    stacks = [m for m in model.modules() if isinstance(getattr(m, "routing_context", None), RoutingContext)]
    contexts = {id(stack.routing_context): stack.routing_context for stack in stacks}
    for context in contexts.values():
        context.keeping += 1
    try:
        yield
    finally:
        for context in contexts.values():
            context.keeping -= 1
            if not context.keeping:
                context._kept = None


class MaskedMoE(nn.Module):
    """Calls a MoE layer with what the stack's call gave the shared context."""

    def __init__(self, layer: nn.Module, context: RoutingContext):
        super().__init__()
        self.layer, self.context = layer, context
        context.layers.append(layer)

    def forward(self, hidden: Tensor) -> Tensor:
        mask = self.context.attention_mask
        if (
            mask is not None
            and mask.dim() == 2
            and mask.shape[0] == hidden.shape[0]
            and mask.shape[1] > hidden.shape[1]
        ):
            mask = mask[:, -hidden.shape[1] :]  # cached decoding: the mask covers past + new positions
        hyper_experts = self.context.hyper_experts.get(self.layer)
        if hyper_experts is None:
            return self.layer(hidden, mask)  # any other mismatch is an error there
        return self.layer(hidden, mask, hyper_experts=hyper_experts)


def choose_layers(spec: str | Sequence[int], num_layers: int | None) -> list[int]:
    """``all``, ``every_2`` (1, 3, 5, ...: every second block, as Switch places its MoE
    layers) or an explicit list of block indices. ``num_layers=None`` checks the form only."""
    every = re.fullmatch(r"every_([1-9][0-9]*)", spec) if isinstance(spec, str) else None
    if isinstance(spec, str) and spec != "all" and every is None:
        switch_only = " ('sparse': Switch backbones only)" if spec == "sparse" else ""
        raise ConfigError(
            f"model.moe_layers={spec!r} is not 'all', 'every_<n>' (n >= 1) or a list of block indices{switch_only}"
        )
    if not isinstance(spec, str):
        integers = all(isinstance(i, int) and not isinstance(i, bool) for i in spec)
        if not spec or not integers or len(set(spec)) < len(spec):
            raise ConfigError(
                f"model.moe_layers={list(spec)} must be 'all', 'every_<n>' or a list of distinct integer block indices"
            )
    if num_layers is None:
        return []
    if isinstance(spec, str):
        step = int(every.group(1)) if every is not None else 1
        layers = list(range(step - 1, num_layers, step))
        if not layers:
            raise ConfigError(f"model.moe_layers={spec!r} selects none of the stack's {num_layers} blocks")
        return layers
    layers = sorted(spec)
    if layers[0] < 0 or layers[-1] >= num_layers:
        raise ConfigError(
            f"model.moe_layers={list(spec)} must be block indices in [0, {num_layers}): the backbone has "
            f"{num_layers} blocks"
        )
    return layers
