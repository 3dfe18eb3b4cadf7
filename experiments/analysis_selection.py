"""Claim 3: is the selection embedding (built from the UNSELECTED experts) related to the
expert the router DID select?

For every HyperMoE layer of a trained checkpoint, on validation tokens: the cosine similarity
of each token's HyperExpert output H(x) to each expert's output E_j(x) on the same token,
averaged into an (e, e) matrix, row i = tokens routed to expert i (their first choice),
column j = the expert compared. If the HyperExpert carries knowledge specific to the selected
expert, the diagonal stands out from the rest of its row; ``diagonal_minus_off`` is that gap
(mean over rows). A near-zero gap means no expert-specific relation was measured.

A gap can also come from the token alone: the router picks an expert by the token, and the
HyperExpert sees the token too. So the gap is set against its null (``--permutations`` times):
each token's HyperExpert generated from another token's selection, applied to its own input,
compared by its own selected expert. A gap inside that distribution is not the selection's doing;
``p_value`` is the share of shuffles whose gap is at least the measured one (one-sided, counting
the measured one). The tokens of a batch are not independent, so p is, if anything, too small,
and it is per layer, with no correction for testing several.

    python experiments/analysis_selection.py CKPT --out experiments/results/selection [--batches 4]

Writes ``<out>.json`` (the command; per layer: matrix, diagonal mean, off-diagonal mean, gap,
tokens, the shuffled gaps' mean and std, p-value) and ``<out>.png`` (one heatmap per layer).
"""

import argparse
import dataclasses
import json
import logging
import statistics
from collections.abc import Iterable
from pathlib import Path

import matplotlib
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor

matplotlib.use("Agg")
import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)
import matplotlib.pyplot as plt

from hypermoe.checkpoint_checks import load_checkpoint
from hypermoe.config import script_command
from hypermoe.errors import ConfigError
from hypermoe.moe import HyperMoE
from hypermoe.moe.layers import flatten_tokens
from hypermoe.moe.router import Routing
from hypermoe.train import build

log = logging.getLogger(__name__)

_PER_TOKEN = ("logits", "probs", "expert_index", "gates")  # Routing's fields with one row per token


def relatedness(
    hyper_out: Tensor, expert_outs: Tensor, first_choice: Tensor, null_hyper_outs: Iterable[Tensor] = ()
) -> dict:
    """hyper_out (n, d), expert_outs (e, n, d), first_choice (n,) -> the (e, e) mean-cosine
    matrix (rows: the selected expert; a row with no tokens is NaN) and its summary; with
    ``null_hyper_outs`` (each (n, d): the HyperExperts of shuffled selections), the null of the gap
    and ``selection_change``: over the tokens whose HyperExpert changed, ||H' - H|| / ||H|| (the
    norms over all those tokens), averaged over the shuffles (0: the HyperExpert ignores the selection)."""
    rows = _rows_by_selected(_cosines(hyper_out, expert_outs), first_choice)
    diagonal, off = _diagonal_and_off(rows)
    result = {
        "matrix": rows.tolist(),
        "diagonal_mean": float(diagonal.mean()),
        "off_diagonal_mean": float(off.mean()),
        "diagonal_minus_off": _gap(rows),
        "tokens": int(first_choice.numel()),
    }
    null, changes = [], []
    for out in null_hyper_outs:
        null.append(_gap(_rows_by_selected(_cosines(out, expert_outs), first_choice)))
        moved = (out != hyper_out).any(-1)  # the tokens given another expert set (the same set: the same output)
        changes.append(float((out - hyper_out)[moved].norm() / hyper_out[moved].norm().clamp_min(1e-12)))
    if len(null) > 1:
        gaps = torch.tensor(null)
        result |= {
            "null_gap_mean": float(gaps.mean()),
            "null_gap_std": float(gaps.std()),
            "p_value": float((1 + (gaps >= result["diagonal_minus_off"]).sum()) / (1 + len(gaps))),
            "permutations": len(gaps),
            # how much the HyperExpert's output moves when the selection it is generated from changes
            "selection_change": statistics.fmean(changes),
        }
    return result


def _cosines(hyper_out: Tensor, expert_outs: Tensor) -> Tensor:
    """(n, d), (e, n, d) -> (n, e): each token's HyperExpert output against each expert's."""
    return F.cosine_similarity(hyper_out.unsqueeze(0), expert_outs, dim=-1).t()


def _rows_by_selected(cosine: Tensor, selected: Tensor) -> Tensor:
    """(n, e) cosines -> (e, e): row i is the mean over the tokens that selected expert i (NaN if none)."""
    num_experts = cosine.shape[1]
    sums = cosine.new_zeros(num_experts, num_experts).index_add_(0, selected, cosine)
    return sums / torch.bincount(selected, minlength=num_experts).unsqueeze(-1)  # 0 / 0: NaN


def _diagonal_and_off(rows: Tensor) -> tuple[Tensor, Tensor]:
    """The diagonal and the off-diagonal entries (one row per selected expert) of the rows with tokens."""
    used = ~rows.isnan().any(-1)
    off = rows[used][~torch.eye(len(rows), dtype=torch.bool)[used]].view(int(used.sum()), -1)
    return rows.diagonal()[used], off


def _gap(rows: Tensor) -> float:
    """Mean over the selected experts of (similarity to that expert - mean similarity to the others)."""
    diagonal, off = _diagonal_and_off(rows)
    return float((diagonal - off.mean(-1)).mean())


@torch.no_grad()
def layer_relatedness(
    layer: HyperMoE, x: Tensor, attention_mask: Tensor | None, permutations: int, generator: torch.Generator
) -> dict:
    tokens, valid = flatten_tokens(x, attention_mask)
    tokens = tokens[valid]
    every = torch.ones(tokens.shape[0], dtype=torch.bool)
    routing = layer.router(tokens, every)
    hyper_out, _ = layer.hyper_expert(tokens, every, routing)
    expert_outs = torch.stack([expert(tokens) for expert in layer.experts.ffns])  # (e, n, d)
    null = (layer.hyper_expert(tokens, every, _shuffled(routing, generator))[0] for _ in range(permutations))
    return relatedness(hyper_out, expert_outs, routing.expert_index[:, 0], null)


def _shuffled(routing: Routing, generator: torch.Generator) -> Routing:
    """The same routing decisions, each given to another token."""
    order = torch.randperm(routing.expert_index.shape[0], generator=generator)
    return dataclasses.replace(routing, **{name: getattr(routing, name)[order] for name in _PER_TOKEN})


def analyse(ckpt_path: str, batches: int, permutations: int, seed: int) -> dict[str, dict]:
    checkpoint = load_checkpoint(ckpt_path)
    cfg = OmegaConf.create(checkpoint["hypermoe"]["config"])
    data, module = build(cfg)
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    layers = [(name, layer) for name, layer in zip(module.net.moe_names, module.net.moe, strict=True)
              if isinstance(layer, HyperMoE)]  # fmt: skip
    if not layers:
        raise SystemExit(f"{ckpt_path} has no HyperMoE layer (model.variant={cfg.model.variant!r})")
    inputs: dict[str, list] = {name: [] for name, _ in layers}
    for name, layer in layers:
        layer.register_forward_hook(
            lambda mod, args, out, name=name: inputs[name].append(
                (args[0].detach(), args[1] if len(args) > 1 else None)
            )
        )
    data.setup("validate")
    with torch.no_grad():
        for index, batch in enumerate(data.val_dataloader()):
            if index >= batches:
                break
            # the teacher-forced forward: a text-to-text validation step also generates, which runs
            # the encoder a second time and the decoder once per generated token
            module(batch)
    results = {}
    for name, layer in layers:
        xs = [x.reshape(-1, x.shape[-1]) for x, _ in inputs[name]]  # (tokens of the batch, d)
        masks = [torch.ones(len(x), dtype=torch.bool) if m is None else m.reshape(-1).bool()
                 for x, (_, m) in zip(xs, inputs[name], strict=True)]  # fmt: skip
        generator = torch.Generator().manual_seed(seed)
        results[name] = layer_relatedness(layer, torch.cat(xs), torch.cat(masks), permutations, generator)
    return results


def _gap_text(result: dict, separator: str) -> str:
    """The gap, and (with --permutations) its shuffled null, p-value and selection change, joined by ``separator``."""
    parts = [f"gap {result['diagonal_minus_off']:+.4f}"]
    if "p_value" in result:
        parts += [
            f"shuffled {result['null_gap_mean']:+.4f} ± {result['null_gap_std']:.4f} (p={result['p_value']:.3f})",
            f"selection change {result['selection_change']:.2g}",
        ]
    return separator.join(parts)


def plot(results: dict[str, dict], path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(3.4 * len(results), 3.6), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items(), strict=True):
        image = ax.imshow(result["matrix"], cmap="viridis")
        ax.set_title(f"{name}: " + _gap_text(result, "\n"), fontsize=8)
        ax.set_xlabel("expert compared")
        ax.set_ylabel("expert selected")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle("cos(HyperExpert output, expert output), by selected expert")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt_path")
    parser.add_argument("--out", required=True, help="path prefix of the .json and .png written")
    parser.add_argument("--batches", type=int, default=4, help="validation batches to read")
    parser.add_argument("--permutations", type=int, default=200, help="shuffled selections for the null (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffles")
    args = parser.parse_args(argv)
    if args.permutations == 1 or args.permutations < 0:
        parser.error(f"--permutations {args.permutations}: 0 (no null) or at least 2")
    if args.batches < 1:
        parser.error(f"--batches {args.batches}: at least 1")
    try:
        results = analyse(args.ckpt_path, args.batches, args.permutations, args.seed)
    except ConfigError as error:  # no such checkpoint, or not one of train.py's
        raise SystemExit(f"analysis_selection: {error}") from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = script_command("experiments/analysis_selection.py", argv)
    record = {"ckpt_path": args.ckpt_path, "command": command}
    out.with_suffix(".json").write_text(json.dumps({**record, "layers": results}, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))
    for name, result in results.items():
        print(f"{name}: diagonal {result['diagonal_mean']:+.3f}, off-diagonal {result['off_diagonal_mean']:+.3f}, "
              f"{_gap_text(result, ', ')} over {result['tokens']} tokens")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
