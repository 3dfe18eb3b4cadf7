"""Feed-forward blocks: one dense FFN, and e FFNs run on contiguous token slices.

Shape legend: n tokens, d d_model, f d_ff, e experts, c tokens of one expert.
Weights use the nn.Linear layout (out_features, in_features) so an expert runs the very
kernel a dense FFN runs, and copying a pretrained FFN into every expert (sparse
upcycling) is a plain copy.
"""

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypermoe.moe.checks import check_choice, check_positive
from hypermoe.moe.grouped import grouped_linear

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # BERT / MiniLM
    "gelu_tanh": partial(F.gelu, approximate="tanh"),  # GPT-2's gelu_new
    "silu": F.silu,
}


def _check_ffn_args(d_model: int, d_ff: int, activation: str, dropout: float) -> None:
    check_positive("d_model", d_model)
    check_positive("d_ff", d_ff)
    check_choice("activation", activation, ACTIVATIONS)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


class FFN(nn.Module):
    """The plain transformer FFN d -> f -> d: the dense-model baseline and the upcycling source.

    Follows the MoE layer protocol (``forward(x, attention_mask)``, ``aux_losses``,
    ``routing_stats``) so it is a drop-in for every variant. Padding positions output zero,
    as in the routed variants, so all variants agree on every position.
    """

    def __init__(self, d_model: int, d_ff: int, activation: str, bias: bool, dropout: float = 0.0):
        super().__init__()
        _check_ffn_args(d_model, d_ff, activation, dropout)
        self.d_model, self.d_ff, self.activation, self.bias = d_model, d_ff, activation, bias
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.aux_losses: dict[str, Tensor] = {}
        self.routing_stats: dict[str, Tensor] = {}

    def forward(self, x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        y = self.fc_out(self.dropout(ACTIVATIONS[self.activation](self.fc_in(x))))
        if attention_mask is not None:
            y = y * attention_mask.unsqueeze(-1).to(y.dtype)
        return y


class Experts(nn.Module):
    """e independent FFNs with stacked weights, applied to tokens sorted by expert."""

    def __init__(self, num_experts: int, d_model: int, d_ff: int, activation: str, bias: bool, dropout: float = 0.0):
        super().__init__()
        _check_ffn_args(d_model, d_ff, activation, dropout)
        check_positive("num_experts", num_experts)
        self.num_experts, self.d_model, self.d_ff, self.activation = num_experts, d_model, d_ff, activation
        self.w_in = nn.Parameter(torch.empty(num_experts, d_ff, d_model))
        self.w_out = nn.Parameter(torch.empty(num_experts, d_model, d_ff))
        self.b_in = nn.Parameter(torch.empty(num_experts, d_ff)) if bias else None
        self.b_out = nn.Parameter(torch.empty(num_experts, d_model)) if bias else None
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Each expert drawn as nn.Linear draws its weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        for weight, bias, fan_in in ((self.w_in, self.b_in, self.d_model), (self.w_out, self.b_out, self.d_ff)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
            if bias is not None:
                nn.init.uniform_(bias, -bound, bound)

    @torch.no_grad()
    def upcycle_from(self, ffn: FFN) -> None:
        """Make every expert an exact copy of ``ffn`` (sparse upcycling)."""
        if (ffn.d_model, ffn.d_ff) != (self.d_model, self.d_ff):
            raise ValueError(
                f"dense_ffn has d_model={ffn.d_model}, d_ff={ffn.d_ff}; the experts need "
                f"d_model={self.d_model}, d_ff={self.d_ff}"
            )
        if ffn.activation != self.activation or (ffn.fc_in.bias is None) != (self.b_in is None):
            raise ValueError(
                f"dense_ffn has activation={ffn.activation!r}, bias={ffn.bias}; the experts need "
                f"activation={self.activation!r}, bias={self.b_in is not None}"
            )
        self.w_in.copy_(ffn.fc_in.weight.expand_as(self.w_in))
        self.w_out.copy_(ffn.fc_out.weight.expand_as(self.w_out))
        if self.b_in is not None:
            self.b_in.copy_(ffn.fc_in.bias.expand_as(self.b_in))
            self.b_out.copy_(ffn.fc_out.bias.expand_as(self.b_out))

    def weights(self) -> list[tuple[Tensor, Tensor | None, Tensor, Tensor | None]]:
        """Per-expert (w_in, b_in, w_out, b_out), for running every expert on all tokens.

        Split with one ``unbind`` per tensor: indexing a stacked parameter once per expert
        would make autograd allocate a zero gradient of the whole stack for every expert.
        """

        def split(t: Tensor | None) -> list[Tensor | None]:
            return [None] * self.num_experts if t is None else list(t.unbind(0))

        return list(zip(split(self.w_in), split(self.b_in), split(self.w_out), split(self.b_out), strict=True))

    def run_expert(self, weights: tuple[Tensor, Tensor | None, Tensor, Tensor | None], x: Tensor) -> Tensor:
        """One expert's FFN on tokens x (c, d) -> (c, d)."""
        w_in, b_in, w_out, b_out = weights
        hidden = ACTIVATIONS[self.activation](F.linear(x, w_in, b_in))  # (c, f)
        return F.linear(self.dropout(hidden), w_out, b_out)

    def forward(self, x_sorted: Tensor, counts: list[int]) -> Tensor:
        """x_sorted (sum(counts), d): tokens grouped by expert, counts[i] rows for expert i."""
        hidden = ACTIVATIONS[self.activation](grouped_linear(x_sorted, self.w_in, self.b_in, counts))  # (c, f)
        return grouped_linear(self.dropout(hidden), self.w_out, self.b_out, counts)
