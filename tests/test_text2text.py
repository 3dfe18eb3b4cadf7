"""Text-to-text pairs in the reference (compacter / hyperformer) format, for every GLUE and SuperGLUE task.

The expected sources and targets are written out by hand from the reference ``tasks.py``
preprocessors, not computed with the code under test.
"""

import json
import re

import pytest

from hypermoe.data.examples import Example, Span
from hypermoe.data.sources import hub_example, load_split
from hypermoe.data.tasks import TASKS, get_task
from hypermoe.data.text2text import parse_label, to_text_pair

WSC_TEXT = "Still, anyone who knew that he was 19 could take his claim away from him ."


def _spans(text: str, *words: str) -> tuple[Span, ...]:
    return tuple(Span(0, text.index(word), text.index(word) + len(word)) for word in words)


# (benchmark, task, example, source, target)
CASES = [
    (
        "superglue",
        "boolq",
        Example(
            "Ethanol fuel needs energy to grow and distil.",
            "does ethanol take more energy than it makes",
            label=0,
            fields=(
                ("passage", "Ethanol fuel needs energy to grow and distil."),
                ("question", "does ethanol take more energy than it makes"),
            ),
        ),
        "superglue-boolq question: does ethanol take more energy than it makes "
        "passage: Ethanol fuel needs energy to grow and distil.",
        "0",
    ),
    (
        "superglue",
        "cb",
        Example(
            "Did he think he was helping?",
            "Valence was helping",
            label=1,
            fields=(("premise", "Did he think he was helping?"), ("hypothesis", "Valence was helping")),
        ),
        "superglue-cb premise: Did he think he was helping? hypothesis: Valence was helping",
        "1",
    ),
    (
        "superglue",
        "copa",
        Example(
            "The man turned on the faucet. What was the effect?",
            choices=("The toilet filled with water.", "Water flowed from the spout."),
            label=1,
            fields=(
                ("premise", "The man turned on the faucet."),
                ("question", "effect"),
                ("choice1", "The toilet filled with water."),
                ("choice2", "Water flowed from the spout."),
            ),
        ),
        "superglue-copa premise: The man turned on the faucet. choice1: The toilet filled with water. "
        "choice2: Water flowed from the spout.",
        "1",
    ),
    (
        "superglue",
        "multirc",
        Example(
            "<b>Sent 1: </b>Forces change motion.<br><b>Sent 2: </b>Mass matters.",
            "Does mass <b>matter</b>? Yes",
            label=1,
            group="0-3",
            fields=(
                ("paragraph", "<b>Sent 1: </b>Forces change motion.<br><b>Sent 2: </b>Mass matters."),
                ("question", "Does mass <b>matter</b>?"),
                ("answer", "Yes"),
            ),
        ),
        "superglue-multirc question: Does mass matter? answer: Yes "
        "paragraph: Sent 1: Forces change motion. Sent 2: Mass matters.",
        "1",
    ),
    (
        "superglue",
        "rte",
        Example(
            "Dana Reeve has died of lung cancer.",
            "Christopher Reeve had an accident.",
            label=1,
            fields=(
                ("premise", "Dana Reeve has died of lung cancer."),
                ("hypothesis", "Christopher Reeve had an accident."),
            ),
        ),
        "superglue-rte premise: Dana Reeve has died of lung cancer. hypothesis: Christopher Reeve had an accident.",
        "1",
    ),
    (
        "superglue",
        "wic",
        Example(
            "An emerging professional class.",
            "He showed real class.",
            label=0,
            spans=(Span(0, 25, 30), Span(1, 15, 20)),
            fields=(
                ("sentence1", "An emerging professional class."),
                ("sentence2", "He showed real class."),
                ("word", "class"),
            ),
        ),
        "superglue-wic sentence1: An emerging professional class. sentence2: He showed real class. word: class",
        "0",
    ),
    (
        "superglue",
        "wsc",
        Example(WSC_TEXT, label=0, spans=_spans(WSC_TEXT, "anyone", "him"), fields=(("text", WSC_TEXT),)),
        "superglue-wsc.fixed text: Still, * anyone * who knew that he was 19 could take his claim away from # him # .",
        "0",
    ),
    (
        "glue",
        "cola",
        Example(
            "The sailors rode the breeze clear of the rocks.",
            label=1,
            fields=(("sentence", "The sailors rode the breeze clear of the rocks."),),
        ),
        "cola sentence: The sailors rode the breeze clear of the rocks.",
        "1",
    ),
    (
        "glue",
        "sst2",
        Example(
            "it 's slow -- very , very slow . ", label=0, fields=(("sentence", "it 's slow -- very , very slow . "),)
        ),
        "sst2 sentence: it 's slow -- very , very slow . ",
        "0",
    ),
    (
        "glue",
        "mrpc",
        Example(
            "He said the pie business does n't fit .",
            '" The pie business does not fit .',
            label=1,
            fields=(
                ("sentence1", "He said the pie business does n't fit ."),
                ("sentence2", '" The pie business does not fit .'),
            ),
        ),
        "mrpc sentence1: He said the pie business does n't fit . sentence2: \" The pie business does not fit .",
        "1",
    ),
    (
        "glue",
        "stsb",
        Example(
            "A young child is riding a horse.",
            "A child is riding a horse.",
            label=4.75,
            fields=(("sentence1", "A young child is riding a horse."), ("sentence2", "A child is riding a horse.")),
        ),
        "stsb sentence1: A young child is riding a horse. sentence2: A child is riding a horse.",
        "4.8",
    ),
    (
        "glue",
        "qnli",
        Example(
            "What came into force?",
            "The new constitution came into force.",
            label=0,
            fields=(("question", "What came into force?"), ("sentence", "The new constitution came into force.")),
        ),
        "qnli question: What came into force? sentence: The new constitution came into force.",
        "0",
    ),
    (
        "glue",
        "rte",
        Example(
            "Dana Reeve has died of lung cancer.",
            "Christopher Reeve had an accident.",
            label=1,
            fields=(
                ("sentence1", "Dana Reeve has died of lung cancer."),
                ("sentence2", "Christopher Reeve had an accident."),
            ),
        ),
        "rte sentence1: Dana Reeve has died of lung cancer. sentence2: Christopher Reeve had an accident.",
        "1",
    ),
    (
        "glue",
        "wnli",
        Example(
            "The drain is clogged with hair. It has to be cleaned.",
            "The hair has to be cleaned.",
            label=0,
            fields=(
                ("sentence1", "The drain is clogged with hair. It has to be cleaned."),
                ("sentence2", "The hair has to be cleaned."),
            ),
        ),
        "wnli sentence1: The drain is clogged with hair. It has to be cleaned. sentence2: The hair has to be cleaned.",
        "0",
    ),
    (
        "glue",
        "qqp",
        Example(
            "How do I learn Python?",
            "What is the best way to learn Python?",
            label=1,
            fields=(("question1", "How do I learn Python?"), ("question2", "What is the best way to learn Python?")),
        ),
        "qqp question1: How do I learn Python? question2: What is the best way to learn Python?",
        "1",
    ),
    (
        "glue",
        "mnli",
        Example(
            "The cat sat on the mat.",
            "No animal sat anywhere.",
            label=2,
            fields=(("premise", "The cat sat on the mat."), ("hypothesis", "No animal sat anywhere.")),
        ),
        "mnli premise: The cat sat on the mat. hypothesis: No animal sat anywhere.",
        "2",
    ),
]


def test_every_task_has_a_case():
    assert {(b, name) for b, name, *_ in CASES} == {(b, name) for b, tasks in TASKS.items() for name in tasks}


@pytest.mark.parametrize(
    ("benchmark", "name", "example", "source", "target"), CASES, ids=[f"{c[0]}/{c[1]}" for c in CASES]
)
def test_format_matches_the_reference(benchmark, name, example, source, target):
    task = get_task(benchmark, name)
    pair = to_text_pair(task, example)
    assert (pair.source, pair.target) == (source, target)
    assert (pair.label, pair.group) == (example.label, example.group)
    assert parse_label(task, pair.target) == pytest.approx(example.label, abs=0.1)


def test_unlabeled_examples_get_an_empty_target():
    example = Example("a", "b", fields=(("premise", "a"), ("hypothesis", "b")))
    pair = to_text_pair(get_task("superglue", "rte"), example)
    assert (pair.source, pair.target, pair.label) == ("superglue-rte premise: a hypothesis: b", "", None)


def test_wsc_marks_a_pronoun_before_its_noun():
    text = "He said Tom was late."
    example = Example(text, label=1, spans=_spans(text, "Tom", "He"), fields=(("text", text),))
    assert to_text_pair(get_task("superglue", "wsc"), example).source == (
        "superglue-wsc.fixed text: # He # said * Tom * was late."
    )


def test_wsc_marks_a_pronoun_inside_its_noun_phrase():
    text = "and their mothers are worried."
    example = Example(text, label=0, spans=(Span(0, 4, 17), Span(0, 4, 9)), fields=(("text", text),))
    assert to_text_pair(get_task("superglue", "wsc"), example).source == (
        "superglue-wsc.fixed text: and * # their # mothers * are worried."
    )


def test_an_example_without_fields_is_refused():
    with pytest.raises(ValueError, match=r"glue/cola example lacks fields \['sentence'\]"):
        to_text_pair(get_task("glue", "cola"), Example("The sailors rode the breeze."))


@pytest.mark.parametrize(("score", "target"), [(0.0, "0.0"), (0.29, "0.2"), (0.33, "0.4"), (1.93, "2.0"), (5.0, "5.0")])
def test_stsb_rounds_to_the_nearest_fifth(score, target):
    example = Example("a", "b", label=score, fields=(("sentence1", "a"), ("sentence2", "b")))
    assert to_text_pair(get_task("glue", "stsb"), example).target == target


@pytest.mark.parametrize(
    ("benchmark", "name", "text", "label"),
    [
        ("superglue", "rte", "1", 1),
        ("superglue", "rte", " 0 ", 0),
        ("superglue", "rte", "2", None),
        ("superglue", "rte", "not_entailment", None),
        ("superglue", "rte", "", None),
        ("superglue", "cb", "2", 2),
        ("superglue", "cb", "02", None),
        ("glue", "mnli", "2", 2),
        ("glue", "stsb", "3.8", 3.8),
        ("glue", "stsb", "5.0", 5.0),
        ("glue", "stsb", "5.2", None),
        ("glue", "stsb", "-0.2", None),
        ("glue", "stsb", "nan", None),
        ("glue", "stsb", "high", None),
    ],
)
def test_parse_label(benchmark, name, text, label):
    assert parse_label(get_task(benchmark, name), text) == label


# Real files ---------------------------------------------------------------------------------------

REAL = [
    ("superglue", "rte"),
    ("superglue", "wsc"),
    ("superglue", "multirc"),
    ("superglue", "copa"),
    ("superglue", "wic"),
    ("glue", "stsb"),
    ("glue", "cola"),
    ("glue", "mrpc"),
]


@pytest.mark.parametrize(("benchmark", "name"), REAL, ids=["/".join(r) for r in REAL])
def test_real_validation_files_format(benchmark, name, data_root):
    task = get_task(benchmark, name)
    examples = load_split(task, "validation", data_root)
    for example in examples:
        pair = to_text_pair(task, example)
        assert pair.source.startswith(f"{'superglue-' if benchmark == 'superglue' else ''}{name}")
        assert pair.target and pair.group == example.group
        if task.kind == "regression":
            assert abs(parse_label(task, pair.target) - example.label) <= 0.1 + 1e-9  # ties go to the even fifth
        else:
            assert parse_label(task, pair.target) == example.label
        if name == "wsc":  # the official texts hold no * or #: each mark is one of ours
            assert pair.source.count("*") == 2 and pair.source.count("#") == 2
            for mark, other, span in zip("*#", "#*", example.spans, strict=True):  # one pair nests in the other
                alone = re.sub(rf"\{other} | \{other}", "", pair.source)
                marked = re.search(rf"\{mark} (.+?) \{mark}", alone, re.DOTALL).group(1)
                assert marked == example.text_a[span.start : span.end]
        if name == "multirc":
            assert not re.search(r"</?b>|<br", pair.source)


# Hub rows and local files -------------------------------------------------------------------------

# (benchmark, task, file name, local file text, hub row): the same record in both layouts
HUB = [
    ("superglue", "boolq", "val.jsonl",
     {"question": "is it q", "passage": "P.", "idx": 0, "label": True},
     {"question": "is it q", "passage": "P.", "idx": 0, "label": 1}),
    ("superglue", "cb", "val.jsonl",
     {"premise": "P.", "hypothesis": "H.", "label": "contradiction", "idx": 0},
     {"premise": "P.", "hypothesis": "H.", "label": 1, "idx": 0}),
    ("superglue", "copa", "val.jsonl",
     {"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "cause", "label": 0, "idx": 0},
     {"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "cause", "label": 0, "idx": 0}),
    ("superglue", "multirc", "val.jsonl",
     {"idx": 0, "version": 1.1, "passage": {"text": "<b>Sent 1: </b>P.", "questions": [
         {"question": "Q?", "idx": 0, "answers": [{"text": "A", "idx": 0, "label": 1}]}]}},
     {"paragraph": "<b>Sent 1: </b>P.", "question": "Q?", "answer": "A",
      "idx": {"paragraph": 0, "question": 0, "answer": 0}, "label": 1}),
    ("superglue", "rte", "val.jsonl",
     {"premise": "P.", "hypothesis": "H.", "label": "not_entailment", "idx": 0},
     {"premise": "P.", "hypothesis": "H.", "label": 1, "idx": 0}),
    ("superglue", "wic", "val.jsonl",
     {"word": "class", "sentence1": "A class.", "sentence2": "Real class.", "idx": 0, "label": False,
      "start1": 2, "end1": 7, "start2": 5, "end2": 10, "version": 1.1},
     {"word": "class", "sentence1": "A class.", "sentence2": "Real class.", "idx": 0, "label": 0,
      "start1": 2, "end1": 7, "start2": 5, "end2": 10}),
    ("superglue", "wsc", "val.jsonl",
     {"text": "Tom said he left .", "target": {"span1_index": 0, "span2_index": 2, "span1_text": "Tom",
                                              "span2_text": "he"}, "idx": 0, "label": True},
     {"text": "Tom said he left .", "span1_index": 0, "span2_index": 2, "span1_text": "Tom", "span2_text": "he",
      "idx": 0, "label": 1}),
    ("glue", "cola", "dev.tsv", "gj04\t1\t\tThe sailors rode.\n",
     {"sentence": "The sailors rode.", "label": 1, "idx": 0}),
    ("glue", "sst2", "dev.tsv", "sentence\tlabel\nit 's slow . \t0\n",
     {"sentence": "it 's slow . ", "label": 0, "idx": 0}),
    ("glue", "mrpc", "msr_paraphrase_train.txt", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tA .\tB .\n",
     {"sentence1": "A .", "sentence2": "B .", "label": 1, "idx": 0}),
    ("glue", "stsb", "dev.tsv",
     "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
     "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man.\tA guy.\t4.750\n",
     {"sentence1": "A man.", "sentence2": "A guy.", "label": 4.75, "idx": 0}),
    ("glue", "qnli", "dev.tsv", "index\tquestion\tsentence\tlabel\n0\tQ?\tS.\tentailment\n",
     {"question": "Q?", "sentence": "S.", "label": 0, "idx": 0}),
    ("glue", "rte", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tnot_entailment\n",
     {"sentence1": "A.", "sentence2": "B.", "label": 1, "idx": 0}),
    ("glue", "wnli", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\t0\n",
     {"sentence1": "A.", "sentence2": "B.", "label": 0, "idx": 0}),
    ("glue", "qqp", "dev.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\tA?\tB?\t1\n",
     {"question1": "A?", "question2": "B?", "label": 1, "idx": 0}),
    ("glue", "mnli", "dev_matched.tsv", "index\tgenre\tsentence1\tsentence2\tgold_label\n0\tfiction\tA.\tB.\tneutral\n",
     {"premise": "A.", "hypothesis": "B.", "label": 1, "idx": 0}),
]  # fmt: skip


def test_every_task_has_a_hub_case():
    assert {(b, name) for b, name, *_ in HUB} == {(b, name) for b, tasks in TASKS.items() for name in tasks}


@pytest.mark.parametrize(("benchmark", "name", "file", "local", "row"), HUB, ids=[f"{h[0]}/{h[1]}" for h in HUB])
def test_hub_rows_give_the_local_readers_fields(benchmark, name, file, local, row, tmp_path):
    task = get_task(benchmark, name)
    path = tmp_path / file
    path.write_text(json.dumps(local) + "\n" if isinstance(local, dict) else local)
    if name == "mrpc":  # the validation pairs are those dev_ids.tsv lists
        (tmp_path / "dev_ids.tsv").write_text("7\t8\n")
    [read] = task.readers["validation"](path)
    from_hub = hub_example(task, row)
    assert read.fields and from_hub.fields == read.fields
    assert from_hub == read
    assert to_text_pair(task, from_hub) == to_text_pair(task, read)
