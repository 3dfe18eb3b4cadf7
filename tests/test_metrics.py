"""Task metrics against hand-computed values."""

import math

import pytest
import torch

from hypermoe.data.metrics import MatthewsCorrCoef, binary_matthews, build_metrics, metric_mode, predictions
from hypermoe.data.tasks import get_task


def _compute(benchmark, task, preds, target, groups=None):
    metrics = build_metrics(get_task(benchmark, task), prefix="")
    return {k: v.item() for k, v in metrics(torch.tensor(preds), torch.tensor(target), groups=groups).items()}


def test_cb_macro_f1_and_accuracy():
    # class 0: tp 2 fp 2 fn 0 -> f1 2/3; class 1: tp 1 fp 0 fn 1 -> f1 2/3; class 2: tp 0 fn 1 -> 0
    values = _compute("superglue", "cb", [0, 0, 1, 0, 0], [0, 0, 1, 1, 2])
    assert values["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert values["accuracy"] == pytest.approx(3 / 5)


def test_mrpc_binary_f1():
    """F1 of the positive class, as GLUE scores it: here 2/3, where the macro average would be 0.76."""
    values = _compute("glue", "mrpc", [1, 1, 0, 0, 0], [1, 0, 0, 0, 0])  # tp 1 fp 1 fn 0
    assert values["f1"] == pytest.approx(2 / 3) and values["accuracy"] == pytest.approx(4 / 5)


def test_cola_matthews():
    preds, target = [1, 1, 0, 0, 1], [1, 0, 0, 0, 1]
    tp, tn, fp, fn = 2, 2, 1, 0
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert _compute("glue", "cola", preds, target)["matthews"] == pytest.approx(expected)


@pytest.mark.parametrize("constant", [0, 1])
def test_matthews_of_a_constant_prediction_is_zero_as_the_official_scorers_give_it(constant):
    """Undefined (one predicted class): scikit-learn, which GLUE's and SuperGLUE's scorers call, gives 0."""
    target = [1, 0, 0, 1, 1, 1, 0]
    assert _compute("glue", "cola", [constant] * 7, target)["matthews"] == 0.0
    assert float(binary_matthews(torch.full((7,), constant), torch.tensor(target))) == 0.0


def test_matthews_matches_scikit_learn_over_batches():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(0)
    for classes in (2, 3):
        target = torch.randint(classes, (200,), generator=generator)
        preds = torch.where(torch.rand(200, generator=generator) < 0.6, target, torch.randint(classes, (200,)))
        metric = MatthewsCorrCoef(num_classes=classes)
        for batch_preds, batch_target in zip(preds.split(37), target.split(37), strict=True):  # uneven batches
            metric.update(batch_preds, batch_target)
        expected = sklearn_metrics.matthews_corrcoef(target, preds)
        assert float(metric.compute()) == pytest.approx(expected, abs=1e-6), classes
    target = torch.randint(2, (50,), generator=generator)
    preds = torch.randint(2, (50,), generator=generator)
    assert float(binary_matthews(preds, target)) == pytest.approx(sklearn_metrics.matthews_corrcoef(target, preds))


def test_stsb_pearson_and_spearman():
    values = _compute("glue", "stsb", [1.0, 2.0, 4.0], [1.0, 3.0, 5.0])
    assert values["spearman"] == pytest.approx(1.0, rel=1e-5)
    x, y = [1.0, 2.0, 4.0], [1.0, 3.0, 5.0]
    mx, my = sum(x) / 3, sum(y) / 3
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    expected = cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    assert values["pearson"] == pytest.approx(expected, rel=1e-5)


def test_multirc_f1a_and_exact_match_per_question():
    # question 0: both answers right; question 1: one of two wrong; question 2: both right
    preds, target, groups = [1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 0, 0], torch.tensor([0, 0, 1, 1, 2, 2])
    values = _compute("superglue", "multirc", preds, target, groups)
    assert values["exact_match"] == pytest.approx(2 / 3)
    # F1 over all answers of the positive class (tp 2 fp 1 fn 0); the negative class's would be 6/7
    assert values["f1a"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))


def test_lower_is_better_for_perplexity_and_loss_only():
    """What val/<metric>_best keeps and which way a sweep optimises."""
    assert [metric_mode(name) for name in ("perplexity", "loss", "accuracy", "f1", "matthews")] == [
        "min", "min", "max", "max", "max"
    ]  # fmt: skip


def test_predictions_per_head_kind():
    logits = torch.tensor([[0.1, 0.9], [2.0, -1.0]])
    assert predictions(logits, "classification").tolist() == [1, 0]
    assert predictions(torch.tensor([[3.5], [1.0]]), "regression").tolist() == [3.5, 1.0]
