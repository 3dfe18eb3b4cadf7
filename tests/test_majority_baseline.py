"""The majority-class floor, against counts of the real validation files."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import majority_baseline


def test_majority_class_scores_match_hand_counts(data_root, tmp_path):
    out = tmp_path / "majority.json"
    args = ["superglue/cb", "superglue/wsc", "glue/stsb", "--data-dir", str(data_root), "--out", str(out)]
    results = majority_baseline.main(args)
    # CB validation: 28 contradiction (the training majority), 23 entailment, 5 neutral of 56
    cb = results["superglue/cb"]
    assert list(cb) == ["majority_label", "f1_macro", "accuracy"]  # the task's main metric first
    assert cb["majority_label"] == "contradiction" and cb["accuracy"] == pytest.approx(28 / 56)
    assert cb["f1_macro"] == pytest.approx((2 * 0.5 / 1.5) / 3)  # precision 28/56, recall 1, other classes 0
    assert results["superglue/wsc"]["accuracy"] == pytest.approx(66 / 104)  # 66 False of 104
    assert results["glue/stsb"] == {}  # a constant score has no correlation
    assert json.loads(out.read_text()) == results


def test_an_unknown_task_or_a_missing_file_ends_with_one_line_naming_it(tmp_path):
    with pytest.raises(SystemExit, match=r"majority_baseline: superglue/nope: .*'nope' is not a superglue task"):
        majority_baseline.main(["superglue/nope", "--data-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"majority_baseline: superglue/cb: .*superglue/CB/train\.jsonl"):
        majority_baseline.main(["superglue/cb", "--data-dir", str(tmp_path)])
