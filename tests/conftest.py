import os

# Tests never touch the network: without these, every hub call retries for ~25 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest
import torch

D_MODEL, D_FF = 16, 32


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def shape() -> dict:
    """FFN shape shared by the layer tests: small enough to be instant, big enough to matter."""
    return {"d_model": D_MODEL, "d_ff": D_FF, "activation": "gelu", "bias": True}


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


@pytest.fixture
def data_root():
    """The benchmark files: HYPERMOE_DATA, else ../shared/data beside the clone; skip if absent."""
    from pathlib import Path

    root = Path(os.environ.get("HYPERMOE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not root.is_dir():
        pytest.skip(f"data root {root} is absent (set HYPERMOE_DATA)")
    return root
