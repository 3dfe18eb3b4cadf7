"""Claim-3 analysis: the relatedness summary against a hand-computed case, and the script end to end."""

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, compose_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import analysis_selection

from hypermoe.train import build, run


def test_relatedness_of_a_hyperexpert_that_copies_the_selected_expert():
    # 2 experts with orthogonal outputs; tokens 0, 1 go to expert 0, token 2 to expert 1
    expert_outs = torch.tensor([[[1.0, 0.0]] * 3, [[0.0, 1.0]] * 3])  # (e=2, n=3, d=2)
    first_choice = torch.tensor([0, 0, 1])
    hyper_out = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])  # like expert 0, halfway, like expert 1
    result = analysis_selection.relatedness(hyper_out, expert_outs, first_choice)
    half = 2**-0.5  # cos of [1, 1] with either axis
    torch.testing.assert_close(torch.tensor(result["matrix"]), torch.tensor([[(1 + half) / 2, half / 2], [0.0, 1.0]]))
    assert result["diagonal_mean"] == pytest.approx(((1 + half) / 2 + 1) / 2)
    assert result["diagonal_minus_off"] == pytest.approx((((1 + half) / 2 - half / 2) + 1) / 2)


def _outputs(num_experts: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random expert outputs (e, n, d) and first choices (n,), seeded."""
    generator = torch.Generator().manual_seed(0)
    expert_outs = torch.randn(num_experts, tokens, 16, generator=generator)
    return expert_outs, torch.randint(num_experts, (tokens,), generator=generator)


def test_the_null_tells_a_selection_driven_hyperexpert_from_one_that_only_sees_the_token():
    expert_outs, first_choice = _outputs(num_experts=4, tokens=400)
    generator = torch.Generator().manual_seed(1)

    def selection_driven(choice: torch.Tensor) -> torch.Tensor:  # the chosen expert's output, and as much noise
        return expert_outs[choice, torch.arange(400)] + torch.randn(400, 16, generator=generator)

    shuffled = [selection_driven(first_choice[torch.randperm(400, generator=generator)]) for _ in range(99)]
    result = analysis_selection.relatedness(selection_driven(first_choice), expert_outs, first_choice, shuffled)
    assert result["diagonal_minus_off"] > 0.5 and result["p_value"] == pytest.approx(1 / 100)  # no shuffle reaches it
    assert abs(result["null_gap_mean"]) < 3 * result["null_gap_std"] < 0.1  # another token's selection: no gap
    assert result["selection_change"] > 0.5  # its output follows the selection
    # as related to the selected expert, through the token alone: the same output whatever the selection
    token_only = expert_outs[first_choice, torch.arange(400)]
    result = analysis_selection.relatedness(token_only, expert_outs, first_choice, [token_only] * 99)
    assert result["diagonal_minus_off"] > 0.5 and result["p_value"] == 1.0  # a large gap, none of it the selection's
    assert result["selection_change"] == 0.0


@pytest.mark.slow
def test_script_writes_json_and_plot_for_a_trained_checkpoint(tmp_path):
    run(compose_config("train", [*TINY, "experiment=synthetic_tiny", "debug=limit", "model=hypermoe"], tmp_path))
    out = tmp_path / "selection"
    results = analysis_selection.main(
        [str(tmp_path / "checkpoints" / "last.ckpt"), "--out", str(out), "--batches", "1", "--permutations", "20"]
    )
    assert set(results) == {"layer0", "layer1"}
    written = json.loads(out.with_suffix(".json").read_text())
    assert written["command"].startswith("python experiments/analysis_selection.py ")
    assert written["command"].endswith("--batches 1 --permutations 20")
    layer = written["layers"]["layer0"]
    assert len(layer["matrix"]) == 8 and layer["tokens"] > 0 and out.with_suffix(".png").stat().st_size > 0
    assert layer["permutations"] == 20 and 1 / 21 <= layer["p_value"] <= 1


@pytest.mark.slow
@pytest.mark.usefixtures("tokenizers_root")  # the real T5 tokenizer
def test_a_text_to_text_checkpoint_counts_each_token_once(tmp_path, data_root):
    """Switch's validation step also generates (the encoder again, the decoder token by token):
    the analysis reads the teacher-forced forward, one row per real token of each stack."""
    args = ["backbone=switch_tiny", "data=superglue", "data.task=cb", f"paths.data_dir={data_root}", "model=hypermoe",
            "debug=limit", "trainer.max_epochs=1", *TINY[1:]]  # fmt: skip
    cfg = compose_config("train", args, tmp_path)
    run(cfg)
    results = analysis_selection.main(
        [
            str(tmp_path / "checkpoints" / "last.ckpt"),
            "--out",
            str(tmp_path / "s"),
            "--batches",
            "1",
            "--permutations",
            "2",
        ]
    )
    data, _ = build(cfg)
    data.setup("validate")
    batch = next(iter(data.val_dataloader()))
    tokens = {name.rstrip("0123456789"): result["tokens"] for name, result in results.items()}
    assert tokens == {
        "encoder": int(batch["attention_mask"].sum()),
        "decoder": int(batch["decoder_attention_mask"].sum()),
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batches", "0"], "--batches 0: at least 1"),
        ([], "analysis_selection: ckpt_path='{missing}': no such file"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, capsys, args, message):
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(SystemExit) as stop:
        analysis_selection.main([str(missing), "--out", str(tmp_path / "x"), *args])
    said = str(stop.value.code) + capsys.readouterr().err
    assert message.format(missing=missing) in said


def test_a_checkpoint_without_hypermoe_is_refused(tmp_path):
    run(compose_config("train", [*TINY, "experiment=synthetic_tiny", "debug=limit", "model=topk"], tmp_path))
    with pytest.raises(SystemExit, match="has no HyperMoE layer"):
        analysis_selection.main([str(tmp_path / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "x")])
