"""The paper-settings dry run, on the tiny backbones of the same two families: every model is
built, trained two steps and validated, its parameter counts are the built layers' own, and the
report has every field the full-size run writes."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import paper_dryrun

from hypermoe.config import compose_config


def test_projection_is_the_static_bytes_plus_the_fitted_activations():
    mb = paper_dryrun.MB
    row = {
        "params": {"total": 10**9},
        "steps": [{"batch": 1, "activations_mb": 3000 * 1e6 / mb}, {"batch": 2, "activations_mb": 5000 * 1e6 / mb}],
    }
    projected = paper_dryrun.projection(row, paper_batch=8)
    assert projected["static_gb"] == pytest.approx(16.0)
    assert projected["activations_per_sample_gb"] == pytest.approx(2.0)
    assert projected["activations_intercept_gb"] == pytest.approx(1.0)
    assert projected["peak_gb"] == pytest.approx(16 + 1 + 2 * 8)
    assert projected["gpus"]["80GB"] == {"fits": True, "max_batch": 31}  # (80 - 17) / 2
    assert projected["gpus"]["141GB"] == {"fits": True, "max_batch": 62}


def test_a_projection_needs_activations_that_grow_with_the_batch():
    row = {
        "params": {"total": 10**9},
        "steps": [{"batch": 2, "activations_mb": 10.0}, {"batch": 1, "activations_mb": 10.0}],
    }
    with pytest.raises(ValueError, match="did not grow with the batch"):
        paper_dryrun.projection(row, paper_batch=8)


@pytest.mark.parametrize("batches", [["2", "2"], ["0", "1"]])
def test_the_two_steps_need_two_batch_sizes(batches, capsys):
    with pytest.raises(SystemExit):
        paper_dryrun.parse_args(["--batches", *batches])
    assert "two different batch sizes of at least 1" in capsys.readouterr().err


def test_a_model_that_fails_costs_only_its_own_row(monkeypatch):
    """On a GPU run, a model that cannot be built (say, a tokenizer missing) must not lose the others."""
    jobs = [
        paper_dryrun.Job(family, "topk", True, "cpu", "fp32", (2, 1), "step", True, 1) for family in ("a", "b", "c")
    ]

    def run_model(job):
        if job.family == "b":
            raise FileNotFoundError("no tokenizer")
        return {"family": job.family}

    monkeypatch.setattr(paper_dryrun, "run_model", run_model)
    seen = []
    paper_dryrun.run_all(jobs, in_process=True, finished=lambda job, result: seen.append((job.family, result)))
    assert [family for family, _ in seen] == ["a", "b", "c"]
    assert seen[0][1] == {"family": "a"} and isinstance(seen[1][1], FileNotFoundError) and seen[2][1] == {"family": "c"}


def _expected_counts(models: list[dict], family: str, d: int, d_ff: int, layers: int, bias: bool) -> None:
    """Each variant's counts from the layer shapes alone: N experts of (d -> d_ff -> d) and a
    router of N x d per MoE layer where ffn has one FFN; HyperMoE adds its hypernetwork."""
    counts = {m["variant"]: m["params"] for m in models if m["family"] == family}
    experts, top_k = 8, 1
    ffn = 2 * d * d_ff + (d_ff + d if bias else 0)
    assert counts["topk"]["total"] - counts["ffn"]["total"] == layers * ((experts - 1) * ffn + experts * d)
    assert counts["ffn"]["active_per_token"] == counts["ffn"]["total"]
    assert counts["topk"]["active_per_token"] == counts["topk"]["total"] - layers * (experts - top_k) * ffn
    extra = counts["hypermoe"]["total"] - counts["topk"]["total"]
    assert counts["hypermoe"]["hypernetwork"] == extra > 0
    assert counts["hypermoe"]["active_per_token"] == counts["topk"]["active_per_token"] + extra
    assert counts["topk_adapter"]["total"] == pytest.approx(counts["hypermoe"]["total"], rel=0.01)  # matched width
    assert all(counts[v]["hypernetwork"] == 0 for v in ("ffn", "topk", "topk_adapter"))


@pytest.mark.slow
@pytest.mark.usefixtures("tokenizers_root")  # the real T5 and GPT-2 tokenizer files
def test_tiny_dry_run_reports_every_model(tmp_path):
    threads = torch.get_num_threads()
    report = paper_dryrun.main(["--tiny", "--in-process", "--threads", "1", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads  # --threads holds for the dry run only: the tests run on
    written = json.loads((tmp_path / "paper_dryrun.json").read_text())
    assert written["models"] == json.loads(json.dumps(report["models"], default=str))
    assert written["complete"] is True and written["models_planned"] == 8 and written["failures"] == []
    table = (tmp_path / "paper_dryrun.md").read_text()
    assert "Incomplete" not in table and "Failed" not in table
    assert f"{written['machine']}, torch" in table  # which processor made the times
    cut_short = {**report, "models": report["models"][:3], "complete": False}  # as rewritten after the third model
    assert "**Incomplete**: 3 of 8 models ran." in paper_dryrun.markdown(cut_short)
    failed = {**cut_short, "failures": [{"family": "gpt2_moe", "variant": "ffn", "error": "OSError: no tokenizer"}]}
    assert "**Failed**: gpt2_moe ffn: OSError: no tokenizer" in paper_dryrun.markdown(failed)
    models = report["models"]
    assert [(m["family"], m["variant"]) for m in models] == [
        (family, variant) for family in paper_dryrun.FAMILIES for variant in paper_dryrun.VARIANTS
    ]
    for model in models:
        assert f"| {model['family']} {model['variant']} |" in table
        check = model["reference"]
        if model["variant"] == check["variant"]:  # topk keeps Switch's layers; ffn is GPT-2's own MLP
            assert check["transformers_matches"] is True and check["transformers_total"] == model["params"]["total"]
        assert "published" not in check  # the tiny configurations have no published count
        assert [step["batch"] for step in model["steps"]] == [2, 1]
        for step in model["steps"]:
            assert step["seconds"] > 0 and step["cpu_seconds"] > 0 and step["peak_mem_mb"] > 0
        assert model["steps"][0]["activations_mb"] > model["steps"][1]["activations_mb"] > 0
        assert model["validation"]["loss"] > 0
        projected = model["projection"]
        assert projected["static_gb"] == pytest.approx(16 * model["params"]["total"] / 1e9)
        assert set(projected["gpus"]) == {"80GB", "141GB"}
    switch = compose_config("train", ["backbone=switch_tiny"], tmp_path).backbone.config
    sparse = switch.num_sparse_encoder_layers + switch.num_sparse_decoder_layers
    _expected_counts(models, "switch_base_8", switch.d_model, switch.d_ff, sparse, bias=False)
    gpt2 = compose_config("train", ["backbone=gpt2_tiny"], tmp_path).backbone.config
    _expected_counts(models, "gpt2_moe", gpt2.n_embd, gpt2.n_inner, gpt2.n_layer, bias=True)
    generated = [m["validation"] for m in models if m["family"] == "switch_base_8"]
    assert all(len(v["generated"]) == v["batch"] == 1 and 0 <= v["invalid"] <= 1 for v in generated)
