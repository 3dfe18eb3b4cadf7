"""Test splits and benchmark submissions: the real test files read without labels, each row with
its benchmark id; submission files in the benchmarks' formats; ``eval.py split=test`` end to end."""

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import QUIET, TINY, compose_config

from hypermoe.data.diagnostics import COARSE_CATEGORIES, DIAGNOSTICS, ax_scores, axb_scores, axg_scores
from hypermoe.data.examples import Example
from hypermoe.data.readers import DataError
from hypermoe.data.seq2seq import Seq2SeqDataModule
from hypermoe.data.sources import DataUnavailable, hub_example, load_split, local_path
from hypermoe.data.submission import STSB_SCALE, submission_name, write_submission
from hypermoe.data.tasks import TASKS, get_task
from hypermoe.data.text2text import as_pair_of, prefix, to_text_pair
from hypermoe.errors import ConfigError
from hypermoe.evaluate import run_eval
from hypermoe.predict import named_labels
from hypermoe.train import run

# the official test sizes (SuperGLUE and GLUE papers, HF dataset cards); MultiRC: answer options
TEST_ROWS = {
    "superglue/boolq": 3245, "superglue/cb": 250, "superglue/copa": 500, "superglue/multirc": 9693,
    "superglue/rte": 3000, "superglue/wic": 1400, "superglue/wsc": 146, "glue/cola": 1063, "glue/sst2": 1821,
    "glue/mrpc": 1725, "glue/stsb": 1379, "glue/qnli": 5463, "glue/rte": 3000, "glue/wnli": 146,
}  # fmt: skip
SUBMISSION_NAMES = {
    "superglue/boolq": "BoolQ.jsonl", "superglue/cb": "CB.jsonl", "superglue/copa": "COPA.jsonl",
    "superglue/multirc": "MultiRC.jsonl", "superglue/rte": "RTE.jsonl", "superglue/wic": "WiC.jsonl",
    "superglue/wsc": "WSC.jsonl", "glue/cola": "CoLA.tsv", "glue/sst2": "SST-2.tsv", "glue/mrpc": "MRPC.tsv",
    "glue/stsb": "STS-B.tsv", "glue/qnli": "QNLI.tsv", "glue/rte": "RTE.tsv", "glue/wnli": "WNLI.tsv",
    "glue/qqp": "QQP.tsv", "glue/mnli": "MNLI-m.tsv",
}  # fmt: skip
# every label as the submission spells it
VOCABULARY = {
    "superglue/boolq": {"true", "false"}, "superglue/cb": {"entailment", "contradiction", "neutral"},
    "superglue/copa": {0, 1}, "superglue/multirc": {0, 1}, "superglue/rte": {"entailment", "not_entailment"},
    "superglue/wic": {"true", "false"}, "superglue/wsc": {"True", "False"}, "glue/cola": {"0", "1"},
    "glue/sst2": {"0", "1"}, "glue/mrpc": {"0", "1"}, "glue/qnli": {"entailment", "not_entailment"},
    "glue/rte": {"entailment", "not_entailment"}, "glue/wnli": {"0", "1"},
}  # fmt: skip


def _task(name: str):
    return get_task(*name.split("/"))


def _made_up_predictions(task, count: int) -> list[float]:
    """Every class in turn, or scores running past both ends of STS-B's scale."""
    if task.kind == "regression":
        return [-1.0 + 7.0 * i / (count - 1) for i in range(count)]
    return [i % task.num_labels for i in range(count)]


def _read_submission(path: Path) -> list[tuple]:
    """(idx, label) per test row, read back from a submission file in either format."""
    if path.suffix == ".tsv":
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        assert list(table.columns) == ["index", "prediction"]
        return [(int(index), label) for index, label in zip(table["index"], table["prediction"], strict=True)]
    records = [json.loads(line) for line in path.read_text().splitlines()]
    if path.name != "MultiRC.jsonl":
        assert all(set(record) == {"idx", "label"} for record in records)
        return [(record["idx"], record["label"]) for record in records]
    return [
        ((record["idx"], question["idx"], answer["idx"]), answer["label"])
        for record in records
        for question in record["passage"]["questions"]
        for answer in question["answers"]
    ]


def test_every_task_with_a_test_split_has_its_submission_name():
    named = {
        task.qualified_name: submission_name(task)
        for tasks in TASKS.values()
        for task in tasks.values()
        if "test" in task.files
    }
    assert named == SUBMISSION_NAMES


@pytest.mark.parametrize("name", sorted(TEST_ROWS))
def test_test_split_reads_unlabeled_rows_with_ids_and_round_trips_a_submission(tmp_path, name, data_root):
    task = _task(name)
    examples = load_split(task, "test", data_root)
    assert len(examples) == TEST_ROWS[name] == task.rows["test"]
    assert all(example.label is None for example in examples)
    ids = [example.idx for example in examples]
    assert len(set(ids)) == len(ids)  # each id once
    if name == "superglue/multirc":  # (passage, question, answer), numbered through the file
        assert [i[2] for i in ids] == list(range(len(ids))) and ids[0] == (0, 0, 0)
        assert len({i[0] for i in ids}) == 166 and len({i[:2] for i in ids}) == 1820
    else:
        assert ids == list(range(len(ids)))  # in the file's order
    predicted = _made_up_predictions(task, len(examples))
    path = write_submission(task, examples, predicted, tmp_path)
    assert path.name == SUBMISSION_NAMES[name]
    rows = _read_submission(path)
    assert [idx for idx, _ in rows] == ids  # every row once, in order
    labels = [label for _, label in rows]
    if task.kind == "regression":
        scores = [float(label) for label in labels]
        assert min(scores) == STSB_SCALE[0] and max(scores) == STSB_SCALE[1]  # clipped
        assert scores[len(scores) // 2] == pytest.approx(predicted[len(scores) // 2], abs=1e-3)
    else:
        assert set(labels) == VOCABULARY[name]
        # class i is spelled as the task's label i (in VOCABULARY's case)
        assert [str(label).lower() for label in labels[: task.num_labels]] == [str(x).lower() for x in task.labels]


def test_wsc_test_spans_that_are_not_in_their_text_fall_back_to_their_longest_part(data_root):
    examples = load_split(get_task("superglue", "wsc"), "test", data_root)
    spans = {i: [examples[i].text_a[s.start : s.end] for s in examples[i].spans] for i in (80, 117, 144)}
    assert spans == {80: ["Kamenev", "them"], 117: ["the traffic light", "It"], 144: ["the tape", "it"]}


def test_bad_test_rows_name_file_and_line(tmp_path, data_root):
    task = get_task("glue", "cola")
    path = local_path(task, "test", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("index\tsentence\n0\tBill whistled past the house.\nx1\tThe car honked.\n")
    with pytest.raises(DataError, match=r"CoLA/test\.tsv:3: index 'x1' is not a row id"):
        load_split(task, "test", tmp_path)
    path.write_text("sentence\nBill whistled past the house.\n")  # no index column
    with pytest.raises(DataError, match=r"CoLA/test\.tsv:1: the header lacks column\(s\) \['index'\]"):
        load_split(task, "test", tmp_path)
    cb = get_task("superglue", "cb")
    path = local_path(cb, "test", tmp_path)
    path.parent.mkdir(parents=True)
    lines = (data_root / "superglue" / "CB" / "test.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    del record["idx"]
    path.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]) + "\n")
    with pytest.raises(DataError, match=r"CB/test\.jsonl:2: missing field 'idx'"):
        load_split(cb, "test", tmp_path)
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="read 249 rows for cb test, expected 250"):
        load_split(cb, "test", tmp_path)


def test_an_unlabeled_hub_row_keeps_its_idx_as_the_local_test_reader_does(data_root):
    rte = load_split(get_task("superglue", "rte"), "test", data_root)[7]
    row = {"premise": rte.text_a, "hypothesis": rte.text_b, "label": -1, "idx": 7}
    assert hub_example(get_task("superglue", "rte"), row) == rte
    multirc = load_split(get_task("superglue", "multirc"), "test", data_root)[0]
    idx = dict(zip(("paragraph", "question", "answer"), multirc.idx, strict=True))
    row = {**dict(multirc.fields), "idx": idx, "label": -1}
    assert hub_example(get_task("superglue", "multirc"), row) == multirc


def test_a_labelled_split_cannot_be_written_as_a_submission(tmp_path):
    with pytest.raises(ValueError, match="without its idx"):
        write_submission(get_task("superglue", "rte"), [Example("a", "b", label=0)], [0], tmp_path)


SMALL = ["data.max_length=32", "data.eval_batch_size=256"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, data_root) -> dict[str, Path]:
    """A tiny model trained for one step on SuperGLUE RTE and one on GLUE WNLI."""
    trained = {}
    for name in ("superglue/rte", "glue/wnli"):
        benchmark, task = name.split("/")
        folder = tmp_path_factory.mktemp(task)
        overrides = [*TINY, "model=topk", f"data={benchmark}", f"data.task={task}", *SMALL, "data.max_train_examples=8"]
        short = ["trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=0"]
        run(compose_config("train", [*overrides, *short, f"paths.data_dir={data_root}"], folder))
        trained[name] = folder / "checkpoints" / "last.ckpt"
    return trained


def _eval(checkpoint: Path, data_root: Path, *overrides: str) -> list[str]:
    return [f"ckpt_path={checkpoint}", f"paths.data_dir={data_root}", "+trainer.enable_progress_bar=false", *overrides]


@pytest.mark.parametrize(
    "name", [pytest.param("superglue/rte", marks=pytest.mark.slow), "glue/wnli"]
)  # 3,000 rows; 146
def test_eval_split_test_writes_the_benchmarks_submission_file(tmp_path, checkpoints, data_root, name):
    predicted = run_eval(compose_config("eval", _eval(checkpoints[name], data_root, "split=test"), tmp_path))
    assert predicted["task"] == name and predicted["test"]["rows"] == TEST_ROWS[name]
    assert json.loads((tmp_path / "eval_metrics.json").read_text()) == predicted
    rows = _read_submission(tmp_path / SUBMISSION_NAMES[name])
    assert [idx for idx, _ in rows] == list(range(TEST_ROWS[name]))
    assert {label for _, label in rows} <= VOCABULARY[name]


def test_eval_split_test_refuses_what_validation_refuses(tmp_path, checkpoints, data_root):
    rte = checkpoints["superglue/rte"]
    other_task = _eval(rte, data_root, "data=superglue", "data.task=cb", *SMALL, "split=test")
    with pytest.raises(ConfigError, match=r"trained on superglue/rte .*superglue/cb needs .*cannot score that task"):
        run_eval(compose_config("eval", other_task, tmp_path / "cb"))
    no_test_file = _eval(rte, tmp_path / "empty", "split=test")
    with pytest.raises(DataUnavailable, match=r"no local file at .*superglue/RTE/test\.jsonl.*HYPERMOE_DATA"):
        run_eval(compose_config("eval", no_test_file, tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"split='dev' is not one of \['validation', 'test', 'ax_b', 'ax_g', 'ax'\]"):
        run_eval(compose_config("eval", _eval(rte, data_root, "split=dev"), tmp_path / "dev"))
    not_rte = _eval(checkpoints["glue/wnli"], data_root, "split=ax_b")
    with pytest.raises(ConfigError, match=r"split=ax_b is predicted by a model of superglue/rte: glue/wnli"):
        run_eval(compose_config("eval", not_rte, tmp_path / "wnli"))
    not_nli = _eval(checkpoints["glue/wnli"], data_root, "split=ax")
    with pytest.raises(ConfigError, match=r"split=ax is predicted by a model of glue/mnli or glue/rte: glue/wnli"):
        run_eval(compose_config("eval", not_nli, tmp_path / "wnli_ax"))


def test_eval_split_test_refuses_a_task_without_a_test_split(tmp_path):
    short = ["experiment=synthetic_tiny", "trainer.max_epochs=1", "+trainer.limit_train_batches=1"]
    run(compose_config("train", [*TINY, *short, "+trainer.limit_val_batches=0"], tmp_path / "train"))
    evaluate = _eval(tmp_path / "train" / "checkpoints" / "last.ckpt", tmp_path, "split=test")
    with pytest.raises(ConfigError, match=r"split=test: synthetic/majority has no test split to submit: use split="):
        run_eval(compose_config("eval", evaluate, tmp_path / "eval"))
    with pytest.raises(ConfigError, match=re.escape("trainer.precision='abc' must be one of")):
        run_eval(compose_config("eval", [*evaluate[:-1], "trainer.precision=abc"], tmp_path / "precision"))


@pytest.mark.slow  # predicts 2,564 diagnostic rows
def test_an_rte_model_predicts_and_scores_the_diagnostics(tmp_path, checkpoints, data_root):
    rte = checkpoints["superglue/rte"]
    axb = run_eval(compose_config("eval", _eval(rte, data_root, "split=ax_b"), tmp_path / "axb"))["ax_b"]
    rows = _read_submission(tmp_path / "axb" / "AX-b.jsonl")
    assert [idx for idx, _ in rows] == list(range(1104)) and {label for _, label in rows} <= VOCABULARY["superglue/rte"]
    assert axb["rows"] == 1104 and -1 <= axb["matthews"] <= 1
    assert {"Negation", "Double negation", "Conditionals", "Universal"} <= set(axb["matthews_by_logic"])
    axg = run_eval(compose_config("eval", _eval(rte, data_root, "split=ax_g"), tmp_path / "axg"))["ax_g"]
    rows = _read_submission(tmp_path / "axg" / "AX-g.jsonl")
    assert [idx for idx, _ in rows] == list(range(356))
    assert axg["rows"] == 356 and 0 <= axg["accuracy"] <= 1 and 0 <= axg["gender_parity"] <= 1
    ax = run_eval(compose_config("eval", _eval(rte, data_root, "split=ax"), tmp_path / "ax"))["ax"]
    rows = _read_submission(tmp_path / "ax" / "AX.tsv")  # RTE's two classes in MNLI's words
    assert [idx for idx, _ in rows] == list(range(1104)) and {label for _, label in rows} <= {"entailment", "neutral"}
    assert ax["rows"] == 1104 and -1 <= ax["matthews"] <= 1
    assert set(ax["matthews_by_category"]) == set(COARSE_CATEGORIES)
    axb_labels = [label for _, label in _read_submission(tmp_path / "axb" / "AX-b.jsonl")]
    assert [label == "entailment" for _, label in rows] == [label == "entailment" for label in axb_labels]
    assert ax["matthews"] == pytest.approx(axb["matthews"])  # the same pairs, labels and predictions


def _rows(labels: list[int], logic: list) -> list[tuple[Example, dict]]:
    return [
        (Example("premise", "hypothesis", label=label, idx=i), {"logic": names})
        for i, (label, names) in enumerate(zip(labels, logic, strict=True))
    ]


def test_diagnostic_scores_by_hand():
    labels = [0, 0, 1, 1, 0, 1]
    logic = ["Negation", "Negation;Temporal", None, "Negation", "Temporal", "Temporal"]
    predicted = torch.tensor([0, 1, 1, 1, 0, 0])
    scores = axb_scores(_rows(labels, logic), predicted)
    # overall: tp 2, tn 2, fp 1, fn 1 (class 1 positive): (2*2 - 1*1) / sqrt(3*3*3*3) = 3/9
    assert scores["matthews"] == pytest.approx(1 / 3)
    # Negation rows 0, 1, 3: labels 0 0 1, predicted 0 1 1: tp 1, tn 1, fp 1, fn 0: 1 / sqrt(2*1*2*1) = 0.5
    # Temporal rows 1, 4, 5: labels 0 0 1, predicted 1 0 0: tp 0, tn 1, fp 1, fn 1: -1 / sqrt(1*2*2*1) = -0.5
    assert scores["matthews_by_logic"] == pytest.approx({"Negation": 0.5, "Temporal": -0.5})
    # AX-g: pairs (0, 1) (2, 3) (4, 5) predicted alike, alike, not; 4 of 6 right
    pairs = axg_scores(_rows(labels, [None] * 6), torch.tensor([0, 0, 1, 1, 1, 0]))
    assert pairs == pytest.approx({"accuracy": 4 / 6, "gender_parity": 2 / 3})


def test_a_diagnostic_file_not_in_pairs_is_bad_data(tmp_path, data_root):
    folder = tmp_path / "superglue" / "AX-g"
    folder.mkdir(parents=True)
    lines = (data_root / "superglue" / "AX-g" / "AX-g.jsonl").read_text().splitlines()
    (folder / "AX-g.jsonl").write_text("\n".join([lines[0], *lines[2:], lines[1]]) + "\n")
    with pytest.raises(DataError, match=r"AX-g\.jsonl:1-2: not a Winogender pair"):
        DIAGNOSTICS["ax_g"].read(tmp_path)


def test_glue_diagnostic_scores_by_hand():
    # AX-b's labels (0 entailment, 1 not_entailment); predictions in MNLI's classes
    labels = [0, 0, 1, 1, 0, 1]
    records = [{"logic": "Negation", "knowledge": ""}, {"logic": "Negation"}, {"knowledge": "Common sense"},
               {"logic": "Negation", "knowledge": "World knowledge"}, {"knowledge": "Common sense"}, {}]  # fmt: skip
    rows = [
        (Example("p", "h", label=label, idx=i), record)
        for i, (label, record) in enumerate(zip(labels, records, strict=True))
    ]
    entailment, neutral, contradiction = 0, 1, 2  # glue/mnli's label order
    predicted = torch.tensor([entailment, contradiction, neutral, entailment, entailment, contradiction])
    scores = ax_scores(rows, predicted)
    # merged: 0 1 1 0 0 1 against 0 0 1 1 0 1: tp 2, tn 2, fp 1, fn 1: (4 - 1) / sqrt(3 * 3 * 3 * 3) = 1/3
    assert scores["matthews"] == pytest.approx(1 / 3)
    # logic rows 0, 1, 3: labels 0 0 1, merged 0 1 0: tp 0, tn 1, fp 1, fn 1: -1 / sqrt(1 * 2 * 2 * 1) = -0.5
    # knowledge rows 2, 3, 4: labels 1 1 0, merged 1 0 0: tp 1, tn 1, fp 0, fn 1: 1 / sqrt(1 * 2 * 2 * 1) = 0.5
    assert scores["matthews_by_category"] == pytest.approx({"logic": -0.5, "knowledge": 0.5})
    unlabeled = [(Example("p", "h", idx=i), None) for i in range(6)]
    assert ax_scores(unlabeled, predicted) == {}  # without AX-b's labels: written, not scored


def test_an_rte_model_writes_the_glue_diagnostic_in_mnli_words():
    ax, rte, mnli = DIAGNOSTICS["ax"], get_task("superglue", "rte"), get_task("glue", "mnli")
    assert ax.accepts(rte) and ax.accepts(get_task("glue", "rte")) and ax.accepts(mnli)
    assert not ax.accepts(get_task("glue", "wnli")) and not DIAGNOSTICS["ax_b"].accepts(mnli)
    predicted = torch.tensor([0, 1, 1, 0])  # entailment, not_entailment, ...
    assert [mnli.labels[i] for i in ax.relabel(rte, predicted)] == ["entailment", "neutral", "neutral", "entailment"]
    assert ax.relabel(mnli, torch.tensor([2, 1, 0])).tolist() == [2, 1, 0]


def test_the_glue_diagnostic_reads_with_ax_b_labels_and_categories(tmp_path, data_root):
    rows = DIAGNOSTICS["ax"].read(data_root)
    axb = DIAGNOSTICS["ax_b"].read(data_root)
    assert len(rows) == 1104 and [example.idx for example, _ in rows] == list(range(1104))
    assert [example.label for example, _ in rows] == [example.label for example, _ in axb]
    assert sum(bool(record.get("knowledge")) for _, record in rows) == 284
    folder = tmp_path / "glue" / "diagnostic"
    folder.mkdir(parents=True)
    lines = (data_root / "glue" / "diagnostic" / "diagnostic.tsv").read_text().splitlines()
    (folder / "diagnostic.tsv").write_text("\n".join(lines) + "\n")
    assert all(example.label is None for example, _ in DIAGNOSTICS["ax"].read(tmp_path))  # no AX-b: unlabeled
    (tmp_path / "superglue").symlink_to(data_root / "superglue")
    (folder / "diagnostic.tsv").write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    with pytest.raises(DataError, match=r"diagnostic\.tsv:2: its sentence pair is not AX-b's row 0"):
        DIAGNOSTICS["ax"].read(tmp_path)
    (folder / "diagnostic.tsv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match="read 1103 rows for AX, expected 1104"):
        DIAGNOSTICS["ax"].read(tmp_path)


@pytest.fixture(scope="module")
def text_to_text(tmp_path_factory, data_root) -> Path:
    """The tiny random Switch model trained for one step on SuperGLUE CB (250 test rows)."""
    folder = tmp_path_factory.mktemp("switch")
    overrides = [*QUIET, "backbone=switch_tiny", "model=topk", "data=superglue", "data.task=cb", *SMALL]
    short = ["data.max_train_examples=8", "trainer.max_epochs=1", "+trainer.limit_train_batches=1"]
    run(
        compose_config(
            "train", [*overrides, *short, "+trainer.limit_val_batches=0", f"paths.data_dir={data_root}"], folder
        )
    )
    return folder / "checkpoints" / "last.ckpt"


@pytest.mark.slow  # trains a step and generates for 250 rows
def test_a_text_to_text_model_writes_the_submission_file_from_its_generated_labels(
    tmp_path, text_to_text, data_root, caplog
):
    predicted = run_eval(compose_config("eval", _eval(text_to_text, data_root, "split=test"), tmp_path))
    rows = _read_submission(tmp_path / "CB.jsonl")
    assert predicted["test"]["rows"] == 250 and [idx for idx, _ in rows] == list(range(250))
    assert {label for _, label in rows} <= {"entailment", "contradiction", "neutral"}
    # a random model names few labels; the others are written as the label its 8 training examples
    # had most often, which the checkpoint records (CB: 0 entailment, 1 contradiction, 2 neutral)
    majority = torch.load(text_to_text, weights_only=True)["hypermoe"]["majority_target"]
    (unnamed,) = [record.getMessage() for record in caplog.records if "name no label" in record.getMessage()]
    count = re.fullmatch(rf"superglue/cb: (\d+) of 250 generated outputs name no label; .* label {majority}", unnamed)
    named = ["entailment", "contradiction", "neutral"][int(majority)]
    assert count and sum(label == named for _, label in rows) >= int(count[1]) > 0
    # so predicting needs the test file alone, where the training file is absent
    test_only = tmp_path / "test_only" / "superglue" / "CB"
    test_only.mkdir(parents=True)
    shutil.copy(data_root / "superglue" / "CB" / "test.jsonl", test_only)
    run_eval(compose_config("eval", _eval(text_to_text, tmp_path / "test_only", "split=test"), tmp_path / "again"))
    assert (tmp_path / "again" / "CB.jsonl").read_bytes() == (tmp_path / "CB.jsonl").read_bytes()


def test_a_diagnostic_pair_is_read_by_a_text_to_text_model_as_its_tasks_fields(data_root):
    example, _ = DIAGNOSTICS["ax_b"].read(data_root)[0]  # sentence1 / sentence2
    for benchmark, names in [("superglue", ("premise", "hypothesis")), ("glue", ("sentence1", "sentence2"))]:
        rte = get_task(benchmark, "rte")
        pair = as_pair_of(rte, example)
        assert pair.fields == ((names[0], example.text_a), (names[1], example.text_b))
        assert (
            to_text_pair(rte, pair).source == f"{prefix(rte)} {names[0]}: {example.text_a} {names[1]}: {example.text_b}"
        )


def test_an_output_that_names_no_label_is_the_most_frequent_training_label(data_root, caplog):
    def data(benchmark: str, task: str) -> Seq2SeqDataModule:
        return Seq2SeqDataModule(benchmark, task, str(data_root), max_length=32, batch_size=8, eval_batch_size=8)

    # SuperGLUE RTE's training split: 1,249 entailment (0), 1,241 not_entailment (1)
    # a checkpoint from before the majority was recorded: the training file's
    assert named_labels(data("superglue", "rte"), [1, None, 0, None], None).tolist() == [1, 0, 0, 0]
    assert "superglue/rte: 2 of 4 generated outputs name no label" in caplog.text
    # STS-B's training split's scores, rounded to fifths as the targets are: 0.0 368 times, 4.0 366, 3.8 349
    scores = named_labels(data("glue", "stsb"), [2.4, None], None)
    assert scores.dtype == torch.float and scores.tolist() == pytest.approx([2.4, 0.0])
    assert named_labels(data("superglue", "cb"), [2, 1], None).tolist() == [2, 1]  # all named: no training set read
    recorded = Seq2SeqDataModule("superglue", "rte", "/nonexistent", max_length=32, batch_size=8, eval_batch_size=8)
    assert named_labels(recorded, [None, 0], "1").tolist() == [1, 0]  # the checkpoint's: no file read
