"""The parameter counts a run reports (metrics.json, the tables' parameter plots)."""

from torch import nn

from hypermoe.moe import HyperMoESettings, TopKSettings, build_moe_stack
from hypermoe.moe.build import count_parameters
from hypermoe.params import parameter_counts

SHAPE = {"num_layers": 3, "d_model": 8, "d_ff": 16, "activation": "gelu", "bias": True}
EXPERT = 8 * 16 + 16 + 16 * 8 + 8  # one expert FFN, weights and biases


def test_active_parameters_leave_out_the_experts_a_token_does_not_visit():
    stack = build_moe_stack(TopKSettings(num_experts=4, top_k=2), **SHAPE)
    assert count_parameters(stack[0].experts.ffns[0]) == EXPERT
    counts = parameter_counts(stack)
    assert counts["active_per_token"] == counts["total"] - 3 * (4 - 2) * EXPERT  # N - k per layer
    assert counts["hypernetwork"] == 0


def test_a_shared_hypernetwork_is_counted_once():
    """HyperMoE's extra parameters over topk of the same shape: one hypernetwork, plus every
    layer's expert embeddings and selection MLP."""
    routed = {"num_experts": 4, "top_k": 2}
    topk = parameter_counts(build_moe_stack(TopKSettings(**routed), **SHAPE))
    hyper = parameter_counts(build_moe_stack(HyperMoESettings(**routed, share_hypernetwork=True), **SHAPE))
    assert hyper["hypernetwork"] == hyper["total"] - topk["total"] > 0
    assert hyper["active_per_token"] - topk["active_per_token"] == hyper["hypernetwork"]


class _SkipsHalf(nn.Module):
    """A layer of some other variant (no TopKMoE) whose tokens each skip half its parameters."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(8, 8)
        self.aux_losses: dict = {}  # the MoE layer protocol (hypermoe.moe.collect.moe_layers)

    def inactive_parameters_per_token(self) -> int:
        return count_parameters(self) // 2


def test_any_layer_says_which_parameters_its_tokens_skip():
    model = nn.ModuleList([_SkipsHalf(), build_moe_stack(TopKSettings(num_experts=4, top_k=2), **SHAPE)])
    counts = parameter_counts(model)
    assert counts["active_per_token"] == counts["total"] - (8 * 8 + 8) // 2 - 3 * (4 - 2) * EXPERT
