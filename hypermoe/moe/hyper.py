"""HyperMoE (Zhao et al., ACL 2024): TopKMoE plus a HyperExpert generated from the
embeddings of the experts the router did NOT select.

Shape legend: n tokens, d d_model, e experts, k experts per token, g distinct expert sets
in the batch, d_e expert-embedding dim, d_s selection-embedding dim, d_l layer-embedding
dim, h hypernetwork hidden dim, r HyperExpert bottleneck.

The generated weights depend only on (layer, set of experts aggregated), never on the
token's content, so ``generation="per_set"`` generates one HyperExpert per distinct set
present in the batch (at most C(e, k)) and applies it to that set's tokens: the same
numbers as ``generation="per_token"``, the reference that generates one per token.
With the ``grouped_mm`` kernel (CUDA) it generates one for every possible set instead, at
most MAX_ENUMERATED_SETS of them: the shapes then never depend on the batch, so nothing is
read back to the host.

Every-set HyperExperts do not depend on the batch at all, so a stack can generate them for all
its layers before it runs (``generate_every_set``): one hypernetwork call per forward pass,
where one call per layer would read the hypernetwork's large heads, and write their gradients,
once per layer.

At top-1 without a capacity limit a token's set is its expert: the HyperExpert then runs on the
experts' own sorted rows (``TopKMoE.moe``'s ``add_to_rows``), with no sort, gather or scatter of
its own.
"""

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from hypermoe.moe.checks import check_positive
from hypermoe.moe.dispatch import gather_rows, one_hot
from hypermoe.moe.grouped import grouped_ffn, grouped_ffn_mm, resolve_kernel
from hypermoe.moe.layers import TopKMoE, count_sequences, flatten_tokens
from hypermoe.moe.router import Routing
from hypermoe.moe.settings import HyperMoESettings, HypernetworkSettings

# Above this many possible expert sets (C(e, k)), the grouped_mm kernel generates only the
# sets present in the batch, as the loop kernel does, at the cost of one host sync.
MAX_ENUMERATED_SETS = 256


@dataclass
class GeneratedAdapter:
    """g bottleneck modules x -> W_up relu(W_down x + b_down) + b_up (nn.Linear layout)."""

    w_down: Tensor  # (g, r, d)
    b_down: Tensor  # (g, r)
    w_up: Tensor  # (g, d, r)
    b_up: Tensor  # (g, d)

    def split(self, sizes: list[int]) -> list["GeneratedAdapter"]:
        """The first sizes[0] adapters, the next sizes[1], and so on."""
        parts = (t.split(sizes) for t in (self.w_down, self.b_down, self.w_up, self.b_up))
        return [GeneratedAdapter(*tensors) for tensors in zip(*parts, strict=True)]

    def apply_each(self, x: Tensor) -> Tensor:
        """Adapter i on token i: x (g, d) -> (g, d)."""
        hidden = torch.relu(torch.bmm(self.w_down, x.unsqueeze(-1)).squeeze(-1) + self.b_down)  # (g, r)
        return torch.bmm(self.w_up, hidden.unsqueeze(-1)).squeeze(-1) + self.b_up

    def apply_grouped(self, x_sorted: Tensor, counts: list[int]) -> Tensor:
        """Adapter i on the i-th contiguous slice of x_sorted (sum(counts), d)."""
        return grouped_ffn(
            x_sorted,
            counts,
            w_in=self.w_down.unbind(0),
            b_in=self.b_down.unbind(0),
            w_out=self.w_up.unbind(0),
            b_out=self.b_up.unbind(0),
            activation="relu",
        )

    def apply_to_tokens(self, tokens: Tensor, grouped: Tensor, counts: list[int]) -> Tensor:
        """tokens (n, d) -> (n, d): adapter i on the tokens whose ids come i-th in ``grouped``
        (counts[i] of them, after the earlier adapters' tokens); zero on tokens left out."""
        out_sorted = self.apply_grouped(gather_rows(tokens, grouped), counts)
        out = out_sorted.new_zeros(tokens.shape[0], out_sorted.shape[-1])  # autocast dtype, like the experts'
        return out.index_copy_(0, grouped, out_sorted)

    def apply_grouped_mm(self, x_sorted: Tensor, group_ends: Tensor, row_group: Tensor) -> Tensor:
        """Adapter i on the rows up to group_ends[i] (see ``grouped_ffn_mm``); later rows -> 0."""
        return grouped_ffn_mm(
            x_sorted, group_ends, row_group, self.w_down, self.b_down, self.w_up, self.b_up, activation="relu"
        )


def _hyperfanin_(head: nn.Linear, hidden_dim: int, generated_fan_in: int) -> None:
    """Hyperfanin init (Chang et al. 2020): the generated layer starts with variance
    ~1e-6 / fan_in, so the HyperExpert starts near zero; head bias zero."""
    bound = 1e-3 * math.sqrt(3.0 / (hidden_dim * generated_fan_in))
    nn.init.uniform_(head.weight, -bound, bound)
    nn.init.zeros_(head.bias)


class HyperNetwork(nn.Module):
    """One hypernetwork shared by every HyperMoE layer of a stack (and by all its experts).

    Input [s ; l_m] (selection embedding, layer embedding); hidden u = ReLU(A [s; l_m] + a);
    four linear heads generate W_down (d x r), W_up (r x d), b_down (r), b_up (d).
    """

    def __init__(self, d_model: int, num_layers: int, settings: HypernetworkSettings | None = None):
        super().__init__()
        check_positive("d_model", d_model)
        check_positive("num_layers", num_layers)
        settings = settings or HypernetworkSettings()
        selection_dim, layer_embedding_dim = settings.selection_dim, settings.layer_embedding_dim
        hidden_dim, bottleneck = settings.hidden_dim, settings.bottleneck
        self.d_model, self.num_layers, self.selection_dim, self.bottleneck = (
            d_model,
            num_layers,
            selection_dim,
            bottleneck,
        )
        self.layer_embedding = nn.Embedding(num_layers, layer_embedding_dim)
        self.hidden = nn.Linear(selection_dim + layer_embedding_dim, hidden_dim)
        self.w_down_head = nn.Linear(hidden_dim, d_model * bottleneck)
        self.w_up_head = nn.Linear(hidden_dim, bottleneck * d_model)
        self.b_down_head = nn.Linear(hidden_dim, bottleneck)
        self.b_up_head = nn.Linear(hidden_dim, d_model)
        _hyperfanin_(self.w_down_head, hidden_dim, d_model)
        _hyperfanin_(self.w_up_head, hidden_dim, bottleneck)
        _hyperfanin_(self.b_down_head, hidden_dim, 1)
        _hyperfanin_(self.b_up_head, hidden_dim, 1)

    def heads(self) -> tuple[nn.Linear, ...]:
        return self.w_down_head, self.w_up_head, self.b_down_head, self.b_up_head

    def forward(self, selection: Tensor, layer_index: int) -> GeneratedAdapter:
        """selection (g, d_s) -> g generated bottleneck adapters for layer ``layer_index``."""
        return self.generate(selection, self.layer_embedding.weight[layer_index].expand(selection.shape[0], -1))

    def forward_layers(self, selections: list[Tensor], layer_indices: list[int]) -> list[GeneratedAdapter]:
        """The adapters of several layers in one call: selections[i] (g_i, d_s) for layer
        layer_indices[i] -> one GeneratedAdapter of g_i adapters per layer."""
        sizes = [selection.shape[0] for selection in selections]
        embeddings = self.layer_embedding.weight
        layer = torch.cat([embeddings[i].expand(n, -1) for i, n in zip(layer_indices, sizes, strict=True)])
        return self.generate(torch.cat(selections), layer).split(sizes)

    def generate(self, selection: Tensor, layer: Tensor) -> GeneratedAdapter:
        """selection (g, d_s) and layer embeddings (g, d_l) -> g generated adapters."""
        g = selection.shape[0]
        u = torch.relu(self.hidden(torch.cat([selection, layer], dim=-1)))  # (g, h)
        return GeneratedAdapter(
            w_down=self.w_down_head(u).view(g, self.bottleneck, self.d_model),
            b_down=self.b_down_head(u),
            w_up=self.w_up_head(u).view(g, self.d_model, self.bottleneck),
            b_up=self.b_up_head(u),
        )


class SelectionEmbedding(nn.Module):
    """Per-layer expert embeddings e_1..e_N and s = MLP(sum_j w_j e_j), MLP = Linear-ReLU-Linear."""

    def __init__(self, num_experts: int, expert_embedding_dim: int, selection_dim: int):
        super().__init__()
        self.expert_embedding = nn.Parameter(torch.randn(num_experts, expert_embedding_dim))
        self.mlp = nn.Sequential(
            nn.Linear(expert_embedding_dim, expert_embedding_dim),
            nn.ReLU(),
            nn.Linear(expert_embedding_dim, selection_dim),
        )

    def forward(self, expert_weights: Tensor) -> Tensor:
        """expert_weights (g, e): how much each expert's embedding counts -> (g, d_s)."""
        return self.mlp(expert_weights @ self.expert_embedding)


class HyperMoE(TopKMoE):
    """y = TopKMoE(x) + HyperExpert(x); the HyperExpert is generated by ``hypernetwork``
    (shared across the layers of a stack; this layer is its ``layer_index``) from the
    aggregated embeddings of this layer's experts, as ``settings`` (``HyperMoESettings``) say;
    ``settings.hypernetwork`` and ``share_hypernetwork`` are the stack's, read where the
    hypernetwork is made (``hypermoe.moe.build``). Every other argument is TopKMoE's.
    """

    def __init__(self, settings: HyperMoESettings, *args, hypernetwork: HyperNetwork, layer_index: int, **kwargs):
        super().__init__(settings, *args, **kwargs)
        aggregation, generation = settings.aggregation, settings.generation
        if hypernetwork.d_model != self.d_model:
            raise ValueError(f"hypernetwork.d_model={hypernetwork.d_model} does not match d_model={self.d_model}")
        if isinstance(layer_index, bool) or not 0 <= layer_index < hypernetwork.num_layers:
            raise ValueError(
                f"layer_index={layer_index} is outside the hypernetwork's {hypernetwork.num_layers} layers"
            )
        self.hypernetwork, self.layer_index = hypernetwork, layer_index
        self.aggregation, self.generation = aggregation, generation
        self.selection = SelectionEmbedding(self.num_experts, settings.expert_embedding_dim, hypernetwork.selection_dim)
        # every possible selected set (C(e, k), k experts each), sorted by bitmask code, when
        # the aggregated experts follow from the selection alone and there are few enough sets
        enumerable = aggregation not in ("random", "gate_weighted") and math.comb(self.num_experts, self.top_k) <= (
            MAX_ENUMERATED_SETS
        )
        sets = list(itertools.combinations(range(self.num_experts), self.top_k)) if enumerable else []
        set_experts = torch.tensor(sets, dtype=torch.long).view(-1, self.top_k)
        set_codes, order = self._set_codes(set_experts).sort()  # searchsorted finds a token's set
        self.register_buffer("set_experts", set_experts[order], persistent=False)
        self.register_buffer("set_codes", set_codes, persistent=False)

    def aggregation_mask(self, expert_index: Tensor) -> Tensor:
        """(n, k) selections -> (n, e) bool: the experts whose embeddings this token aggregates."""
        selected = torch.zeros(
            expert_index.shape[0], self.num_experts, dtype=torch.bool, device=expert_index.device
        ).scatter_(1, expert_index, True)
        if self.aggregation == "all":
            return torch.ones_like(selected)
        if self.aggregation == "selected":
            return selected
        if self.aggregation == "random":
            # a fresh draw every training step; in eval a fixed one, so evaluation repeats
            generator = None if self.training else torch.Generator(selected.device).manual_seed(self.layer_index)
            noise = torch.rand(selected.shape, device=selected.device, generator=generator)
            return noise.argsort(-1).argsort(-1) < self.num_experts - self.top_k
        return ~selected  # sum, mean, gate_weighted: the unselected experts

    def _mask_to_weights(self, mask: Tensor) -> Tensor:
        weights = mask.float()
        if self.aggregation == "mean":
            weights = weights / (self.num_experts - self.top_k) if self.num_experts > self.top_k else weights
        return weights

    @property
    def generates_every_set(self) -> bool:
        """Whether this layer's HyperExperts can be generated for every possible selected set
        ahead of the batch (``every_set_selection``, ``generate_every_set``)."""
        return self.generation == "per_set" and len(self.set_experts) > 0

    def every_set_selection(self) -> Tensor:
        """The selection embedding of every possible selected set, in ``set_experts`` order: (C, d_s)."""
        weights = self._mask_to_weights(self.aggregation_mask(self.set_experts))  # (C, e)
        return self.selection(weights.to(self.selection.expert_embedding.dtype))

    def hyper_expert(
        self, tokens: Tensor, valid: Tensor, routing: Routing, every_set: GeneratedAdapter | None = None
    ) -> tuple[Tensor, int]:
        """HyperExpert output (n, d), zero on padding, and the number of HyperExperts generated.
        ``every_set``: this layer's HyperExperts for every possible set, generated beforehand."""
        if self.generation == "per_token":
            return self._generate_per_token(tokens, valid, self.aggregation_mask(routing.expert_index), routing.probs)
        grouped_mm = resolve_kernel(self.kernel, tokens) == "grouped_mm"
        if every_set is None and grouped_mm and self.generates_every_set:
            every_set = self.hypernetwork(self.every_set_selection(), self.layer_index)
        if every_set is None:
            return self._generate_per_set(tokens, valid, self.aggregation_mask(routing.expert_index))
        return self._apply_every_set(tokens, valid, routing.expert_index, every_set, grouped_mm)

    def _set_codes(self, expert_index: Tensor) -> Tensor:
        """(m, k) selections -> (m,) bitmask code of each selected set."""
        powers = 2 ** torch.arange(self.num_experts, device=expert_index.device)
        return powers[expert_index].sum(-1)

    def _generate(self, expert_weights: Tensor) -> GeneratedAdapter:
        return self.hypernetwork(self.selection(expert_weights), self.layer_index)

    def _generate_per_token(self, tokens: Tensor, valid: Tensor, mask: Tensor, probs: Tensor) -> tuple[Tensor, int]:
        """The reference: one HyperExpert per token, as the authors' code does."""
        weights = self._mask_to_weights(mask)  # (n, e)
        if self.aggregation == "gate_weighted":
            weights = weights * probs
        out = self._generate(weights.to(tokens.dtype)).apply_each(tokens)
        return out * valid.unsqueeze(-1).to(out.dtype), tokens.shape[0]

    def _generate_per_set(self, tokens: Tensor, valid: Tensor, mask: Tensor) -> tuple[Tensor, int]:
        """One HyperExpert per distinct expert set in the batch, applied to that set's tokens."""
        powers = 2 ** torch.arange(self.num_experts, device=mask.device)
        codes = (mask.long() * powers).sum(-1)  # (n,) one integer per expert set
        codes = torch.where(valid, codes, -1)  # padding sorts first and gets no HyperExpert
        set_codes, set_of_token = torch.unique(codes, return_inverse=True)  # (g,), (n,)
        order = torch.argsort(set_of_token, stable=True)
        counts = torch.bincount(set_of_token, minlength=set_codes.shape[0]).tolist()
        num_padding = tokens.shape[0] - int(valid.sum())
        if num_padding:
            set_codes, counts = set_codes[1:], counts[1:]
        if not counts:  # nothing but padding
            return torch.zeros_like(tokens), 0
        set_masks = (set_codes.unsqueeze(-1) & powers) > 0  # (g, e)
        adapters = self._generate(self._mask_to_weights(set_masks).to(tokens.dtype))
        real = order[num_padding:]  # (n - padding,) token ids grouped by set
        return adapters.apply_to_tokens(tokens, real, counts), len(counts)

    def _check_every_set(self, adapters: GeneratedAdapter) -> int:
        """The number of possible sets, which must be the number of every-set HyperExperts given."""
        num_sets = self.set_experts.shape[0]
        if adapters.w_down.shape[0] != num_sets:
            raise ValueError(f"got {adapters.w_down.shape[0]} HyperExperts for this layer's {num_sets} possible sets")
        return num_sets

    def _apply_every_set(
        self, tokens: Tensor, valid: Tensor, expert_index: Tensor, adapters: GeneratedAdapter, grouped_mm: bool
    ) -> tuple[Tensor, int]:
        """Each token through the HyperExpert of its selected set, out of one per possible set.
        With ``grouped_mm`` the shapes never depend on the batch (no host sync); the loop
        kernel reads the set sizes back and skips the empty sets."""
        num_sets = self._check_every_set(adapters)
        set_of_token = torch.searchsorted(self.set_codes, self._set_codes(expert_index))  # (n,)
        set_of_token = torch.where(valid, set_of_token, num_sets)  # padding after the last set: no HyperExpert
        order = torch.argsort(set_of_token, stable=True)
        if grouped_mm:
            group_ends = one_hot(set_of_token, num_sets).sum(0).cumsum(0).to(torch.int32)  # (C,)
            row_set = set_of_token[order].clamp(max=num_sets - 1)
            out_sorted = adapters.apply_grouped_mm(gather_rows(tokens, order), group_ends, row_set)
            return out_sorted.new_empty(out_sorted.shape).index_copy_(0, order, out_sorted), num_sets
        counts = torch.bincount(set_of_token, minlength=num_sets + 1)[:num_sets].tolist()
        real = order[: sum(counts)]  # token ids grouped by set, padding left out
        return adapters.apply_to_tokens(tokens, real, counts), num_sets

    def runs_on_expert_rows(self, tokens: Tensor) -> bool:
        """Whether the HyperExpert can run on the experts' own dispatch (``TopKMoE.moe``'s
        ``add_to_rows``): at top-1 a token's selected set is its expert, so with every token
        routed (dropless), sets that follow from the selection and the loop kernel, the experts'
        rows are already grouped by set, in the order ``_generate_per_set`` would sort them."""
        return (
            self.top_k == 1
            and self.capacity_factor() is None
            and self.generates_every_set
            and resolve_kernel(self.kernel, tokens) == "loop"
        )

    def _hyper_expert_on_rows(
        self, routed: Tensor, counts: list[int], every_set: GeneratedAdapter | None
    ) -> tuple[Tensor, int]:
        """HyperExpert output of the experts' routed rows (kept, d), grouped by expert at top-1
        (``runs_on_expert_rows``), and the number generated. Set i is expert i's set (set codes
        2^i sort as the experts do); without ``every_set``, only the sets present are generated."""
        if every_set is not None:
            num_sets = self._check_every_set(every_set)
            return every_set.apply_grouped(routed, counts), num_sets
        if not routed.shape[0]:  # nothing routed (an empty or all-padding batch): nothing to generate
            return routed.new_zeros(routed.shape), 0
        present = torch.tensor([i for i, count in enumerate(counts) if count], dtype=torch.long, device=routed.device)
        weights = self._mask_to_weights(self.aggregation_mask(present.unsqueeze(-1)))  # (g, e)
        adapters = self._generate(weights.to(routed.dtype))
        return adapters.apply_grouped(routed, [count for count in counts if count]), len(present)

    def forward(
        self, x: Tensor, attention_mask: Tensor | None = None, hyper_experts: GeneratedAdapter | None = None
    ) -> Tensor:
        """``hyper_experts``: this layer's share of ``generate_every_set`` for the whole stack;
        None generates them here."""
        tokens, valid = flatten_tokens(x, attention_mask)
        if self.runs_on_expert_rows(tokens):
            hyper_stats: dict[str, Tensor] = {}

            def add_hyper_expert(routed: Tensor, counts: list[int], gated: Tensor) -> Tensor:
                hyper_rows, generated = self._hyper_expert_on_rows(routed, counts, hyper_experts)
                hyper_stats.update(self._hyper_stats(hyper_rows, gated, generated))  # before moe adds it into gated
                return hyper_rows

            y, _ = self.moe(tokens, valid, count_sequences(x), add_hyper_expert)
            self.routing_stats.update(hyper_stats)
            return y.view_as(x)
        moe_out, routing = self.moe(tokens, valid, count_sequences(x))
        hyper_out, num_generated = self.hyper_expert(tokens, valid, routing, hyper_experts)
        self.routing_stats.update(self._hyper_stats(hyper_out, moe_out, num_generated))
        return moe_out.add_(hyper_out).view_as(x)  # in place: nothing saved moe_out for backward

    @staticmethod
    @torch.no_grad()
    def _hyper_stats(hyper_out: Tensor, moe_out: Tensor, num_generated: int) -> dict[str, Tensor]:
        """hyper_out and moe_out: per token, or per routed row at top-1 (the same norms)."""
        return {
            "hyper_norm_ratio": hyper_out.norm() / moe_out.norm().clamp_min(1e-12),
            "hyper_generated": torch.tensor(float(num_generated)),
        }


def generate_every_set(layers: Iterable[nn.Module]) -> dict[nn.Module, GeneratedAdapter]:
    """The every-set HyperExperts of each HyperMoE layer among ``layers`` that can take them
    (``generates_every_set``), with one call per distinct hypernetwork: a shared hypernetwork
    reads its heads once for the whole stack instead of once per layer."""
    by_network: dict[HyperNetwork, list[HyperMoE]] = {}
    for layer in layers:
        if isinstance(layer, HyperMoE) and layer.generates_every_set:
            by_network.setdefault(layer.hypernetwork, []).append(layer)
    generated: dict[nn.Module, GeneratedAdapter] = {}
    for network, group in by_network.items():
        selections = [layer.every_set_selection() for layer in group]
        adapters = network.forward_layers(selections, [layer.layer_index for layer in group])
        generated.update(zip(group, adapters, strict=True))
    return generated
