import os
from pathlib import Path

import pytest
import torch

# Tests never touch the network: without these, every hub call retries for ~25 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
# The real T5 and GPT-2 tokenizer files, beside the clone, for the backbones that need them offline.
_SHARED_TOKENIZERS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "tokenizers")
if os.path.isdir(_SHARED_TOKENIZERS):
    os.environ.setdefault("HYPERMOE_TOKENIZERS", os.path.abspath(_SHARED_TOKENIZERS))

D_MODEL, D_FF = 16, 32


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def shape() -> dict:
    """FFN shape shared by the layer tests: small enough to be instant, big enough to matter."""
    return {"d_model": D_MODEL, "d_ff": D_FF, "activation": "gelu", "bias": True}


def loud_hypernetwork(hypernetwork: torch.nn.Module, std: float) -> list[int]:
    """Redraws the hypernetwork's heads so its HyperExperts show in the output (hyperfanin
    starts them near zero); the returned list grows by one per hypernetwork call."""
    with torch.no_grad():
        for head in hypernetwork.heads():
            torch.nn.init.normal_(head.weight, std=std)
    calls: list[int] = []
    hypernetwork.hidden.register_forward_hook(lambda *_: calls.append(1))
    return calls


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


@pytest.fixture(scope="session")
def data_root():
    """The benchmark files: HYPERMOE_DATA, else ../shared/data beside the clone; skip if absent."""

    root = Path(os.environ.get("HYPERMOE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"data root {root} is absent (set HYPERMOE_DATA)")
    return root


@pytest.fixture(scope="session")
def tokenizers_root():
    """The real T5 / GPT-2 tokenizer files: HYPERMOE_TOKENIZERS (set above when beside the clone); skip if absent."""

    root = Path(os.environ.get("HYPERMOE_TOKENIZERS", "/nonexistent"))
    if not root.is_dir():
        pytest.skip(f"tokenizer folder {root} is absent (set HYPERMOE_TOKENIZERS)")
    return root
