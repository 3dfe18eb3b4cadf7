"""The README and docs/ point only at what exists: the `make` targets they name are the ones
`make help` lists (and the README names them all), and every relative link reaches a file of the
repository and, where it names one, a heading of that file."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


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
