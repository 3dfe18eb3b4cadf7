"""The README and docs/ point only at what exists: the `make` targets they name are the ones
`make help` lists (and the README names them all), every relative link reaches a file of the
repository and, where it names one, a heading of that file, the variant lists name every variant,
and the extending guide's example variant runs."""

import re
import textwrap
from pathlib import Path

import pytest
import torch

from hypermoe.moe import TopKMoE, build_moe_stack
from hypermoe.moe.build import VARIANTS, Variant
from hypermoe.params import parameter_counts
from hypermoe.schema import model_schema

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS_DIR = ROOT / "docs"
DOCS = [README, *sorted(DOCS_DIR.glob("*.md"))]


def _help_targets() -> set[str]:
    """The targets `make help` prints: those whose rule carries a `## description`."""
    return set(re.findall(r"^([a-zA-Z_-]+):.*## ", (ROOT / "Makefile").read_text(), re.M))


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_help_targets_are_read_from_the_makefile():
    assert {"help", "install", "test", "train", "bench"} <= _help_targets()


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_make_command_names_a_target_of_make_help(doc):
    named = set(re.findall(r"(?:^|`)make ([a-z][a-z_-]*)", doc.read_text(), re.M))
    assert named <= _help_targets(), f"not in make help: {sorted(named - _help_targets())}"


def test_readme_names_every_target_of_make_help():
    text = README.read_text()
    missing = {target for target in _help_targets() if f"`{target}`" not in text and f"make {target}" not in text}
    assert not missing, f"make help lists targets the README does not name: {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_relative_link_resolves(doc):
    links = re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", doc.read_text())
    for target, anchor in links:
        if target.startswith(("http://", "https://")):
            continue
        path = (doc.parent / target).resolve() if target else doc
        assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name}: {target} does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.*)$", path.read_text(), re.M)
            assert anchor in {_anchor(heading) for heading in headings}, f"{doc.name}: no heading #{anchor} in {target}"


def test_readme_stays_short():
    """The README is the front door (what, install, a tour, the headline result); the rest is in docs/."""
    assert len(README.read_text().splitlines()) <= 200


def _section(doc: Path, heading: str) -> str:
    """The text under ``## heading`` of ``doc``, up to the next heading of that level."""
    return re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", doc.read_text(), re.M | re.S).group(1)


def test_the_docs_list_every_variant():
    """running.md's config groups and method.md's layer library name each ``model.variant``."""
    model_row = next(line for line in _section(DOCS_DIR / "running.md", "Config groups").splitlines()
                     if line.startswith("| `model` |"))  # fmt: skip
    library = _section(DOCS_DIR / "method.md", "The layer library in code (`hypermoe.moe`)")
    for variant in VARIANTS:
        assert f"`{variant}`" in model_row, f"running.md's model row lacks {variant}"
        assert f"| `{variant}` |" in library, f"method.md's layer table lacks {variant}"


def test_the_extending_guides_variant_builds_and_runs(monkeypatch):
    """docs/extending.md's shared-expert example, registered as the guide says: its schema has its
    setting, a stack of it is the routed experts plus the shared FFN, padding outputs zero, and only
    the unvisited experts are counted out of the active parameters."""
    code = re.search(r"```python\n(.*?)```", _section(DOCS_DIR / "extending.md", "A new MoE variant"), re.S)
    example: dict = {}
    exec(textwrap.dedent(code.group(1)), example)  # the guide's own code
    settings_class, layer_class = example["SharedExpertSettings"], example["SharedExpertMoE"]
    monkeypatch.setitem(VARIANTS, "shared_expert", Variant(settings_class, layer_class))
    assert model_schema("shared_expert").shared_d_ff == 0
    with pytest.raises(ValueError, match="shared_d_ff"):
        settings_class(shared_d_ff=-5)
    shape = {"num_layers": 2, "d_model": 8, "d_ff": 16, "activation": "gelu", "bias": True}
    torch.manual_seed(0)
    stack = build_moe_stack(settings_class(num_experts=4, top_k=1, shared_d_ff=12), **shape)
    layer = stack[0]
    x, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    mask[1, 3:] = False
    y = layer(x, mask)
    routed = TopKMoE.forward(layer, x, mask)
    torch.testing.assert_close(y[mask], routed[mask] + layer.shared(x[mask]))
    assert torch.equal(y[~mask], torch.zeros_like(y[~mask]))
    expert = sum(p.numel() for p in layer.experts.ffns[0].parameters())
    counts = parameter_counts(stack)
    assert counts["active_per_token"] == counts["total"] - 2 * 3 * expert
