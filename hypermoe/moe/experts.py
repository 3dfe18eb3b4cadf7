"""Feed-forward blocks: one dense FFN, and e FFNs run on contiguous token slices.

Shape legend: n tokens, d d_model, f d_ff, e experts, c tokens of one expert.
Weights use the nn.Linear layout (out_features, in_features) so an expert runs the very
kernel a dense FFN runs, and copying a pretrained FFN into every expert (sparse
upcycling) is a plain copy.
"""

import torch
from torch import Tensor, nn

from hypermoe.moe.checks import check_choice, check_positive
from hypermoe.moe.grouped import ACTIVATIONS, compute_dtype, grouped_ffn, grouped_ffn_mm


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

    @classmethod
    @torch.no_grad()
    def from_weights(
        cls, w_in: Tensor, w_out: Tensor, activation: str, b_in: Tensor | None = None, b_out: Tensor | None = None
    ) -> "FFN":
        """An FFN holding a backbone's weights, given in the nn.Linear layout (out, in)."""
        ffn = cls(w_in.shape[1], w_in.shape[0], activation, bias=b_in is not None)
        ffn.fc_in.weight.copy_(w_in)
        ffn.fc_out.weight.copy_(w_out)
        if b_in is not None:
            ffn.fc_in.bias.copy_(b_in)
            ffn.fc_out.bias.copy_(b_out)
        return ffn

    def forward(self, x: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        y = self.fc_out(self.dropout(ACTIVATIONS[self.activation](self.fc_in(x))))
        if attention_mask is not None:
            y = y * attention_mask.unsqueeze(-1).to(y.dtype)
        return y


class Experts(nn.Module):
    """e independent FFNs, run together on tokens sorted by expert (one grouped FFN)."""

    def __init__(self, num_experts: int, d_model: int, d_ff: int, activation: str, bias: bool, dropout: float = 0.0):
        super().__init__()
        check_positive("num_experts", num_experts)
        self.num_experts, self.d_model, self.d_ff, self.activation = num_experts, d_model, d_ff, activation
        self.dropout = dropout
        self.ffns = nn.ModuleList(FFN(d_model, d_ff, activation, bias, dropout) for _ in range(num_experts))

    @torch.no_grad()
    def upcycle_from(self, ffn: FFN) -> None:
        """Make every expert an exact copy of ``ffn`` (sparse upcycling)."""
        if (ffn.d_model, ffn.d_ff) != (self.d_model, self.d_ff):
            raise ValueError(
                f"dense_ffn has d_model={ffn.d_model}, d_ff={ffn.d_ff}; the experts need "
                f"d_model={self.d_model}, d_ff={self.d_ff}"
            )
        expert = self.ffns[0]
        if (ffn.activation, ffn.bias) != (expert.activation, expert.bias):
            raise ValueError(
                f"dense_ffn has activation={ffn.activation!r}, bias={ffn.bias}; the experts need "
                f"activation={expert.activation!r}, bias={expert.bias}"
            )
        for expert in self.ffns:
            expert.load_state_dict(ffn.state_dict())

    def _weights(self) -> dict[str, list[Tensor] | None]:
        """Every expert's weights, one list per kind, in grouped_ffn's keyword names."""
        fc_in = [ffn.fc_in for ffn in self.ffns]
        fc_out = [ffn.fc_out for ffn in self.ffns]
        biases = self.ffns[0].bias
        return {
            "w_in": [layer.weight for layer in fc_in],
            "b_in": [layer.bias for layer in fc_in] if biases else None,
            "w_out": [layer.weight for layer in fc_out],
            "b_out": [layer.bias for layer in fc_out] if biases else None,
        }

    def forward(self, x_sorted: Tensor, counts: list[int]) -> Tensor:
        """x_sorted (sum(counts), d): tokens grouped by expert, counts[i] rows for expert i."""
        dropout = self.dropout if self.training else 0.0
        return grouped_ffn(x_sorted, counts, **self._weights(), activation=self.activation, dropout=dropout)

    def forward_mm(self, x_sorted: Tensor, group_ends: Tensor, row_expert: Tensor) -> Tensor:
        """The ``grouped_mm`` kernel: x_sorted (s, d) grouped by expert, group_ends (e,) int32
        end rows, row_expert (s,) each row's expert; rows after the last end output zero."""
        dropout = self.dropout if self.training else 0.0
        weights = self.stacked_weights(compute_dtype(x_sorted))
        return grouped_ffn_mm(x_sorted, group_ends, row_expert, **weights, activation=self.activation, dropout=dropout)

    def stacked_weights(self, dtype: torch.dtype | None = None) -> dict[str, Tensor | None]:
        """Every expert's weights stacked, one tensor per kind (``grouped_ffn_mm``'s keywords), in
        ``dtype`` (default: the parameters'): a copy made on every call. Each expert's weight is
        cast before the stack, so the copy is made once in the compute dtype (bf16: half the
        bytes of stacking in float32 and casting the stack)."""
        return {
            name: None if tensors is None else torch.stack([tensor.to(dtype or tensor.dtype) for tensor in tensors])
            for name, tensors in self._weights().items()
        }
