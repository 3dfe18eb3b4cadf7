"""Rows from the Hugging Face hub become the same examples the local readers make.

The hub is unreachable here, so the rows below are written by hand in the hub datasets' field
layout (aps/super_glue, nyu-mll/glue dataset cards) from the first validation row of the real
local file; each must convert to exactly what the local reader read from that file.
"""

import pytest

from hypermoe.data.sources import hub_example, load_split
from hypermoe.data.tasks import get_task


def _first(benchmark, task, data_root):
    return load_split(get_task(benchmark, task), "validation", data_root)[0]


@pytest.mark.parametrize(
    ("benchmark", "task", "row"),
    [
        ("superglue", "rte", lambda ex: {"premise": ex.text_a, "hypothesis": ex.text_b, "label": 1, "idx": 0}),
        ("superglue", "cb", lambda ex: {"premise": ex.text_a, "hypothesis": ex.text_b, "label": 1, "idx": 0}),
        ("superglue", "copa", lambda ex: {"premise": "The man turned on the faucet.", "question": "effect",
                                          "choice1": ex.choices[0], "choice2": ex.choices[1], "label": 1}),
        ("superglue", "wic", lambda ex: {"sentence1": ex.text_a, "sentence2": ex.text_b, "word": "class",
                                         "start1": 25, "end1": 30, "start2": 85, "end2": 90, "label": 0}),
        ("superglue", "wsc", lambda ex: {"text": ex.text_a, "span1_index": 32, "span2_index": 47,
                                         "span1_text": "anyone", "span2_text": "him", "label": 0}),
        ("glue", "stsb", lambda ex: {"sentence1": ex.text_a, "sentence2": ex.text_b, "label": 5.0, "idx": 0}),
        ("glue", "cola", lambda ex: {"sentence": ex.text_a, "label": ex.label, "idx": 0}),
    ],
    ids=["rte", "cb", "copa", "wic", "wsc", "stsb", "cola"],
)  # fmt: skip
def test_hub_row_converts_like_the_local_reader(benchmark, task, row, data_root):
    local = _first(benchmark, task, data_root)
    assert hub_example(get_task(benchmark, task), row(local)) == local


def test_multirc_hub_row_groups_by_paragraph_and_question(data_root):
    local = _first("superglue", "multirc", data_root)
    question, answer = local.text_b.split("? ", 1)
    row = {"paragraph": local.text_a, "question": question + "?", "answer": answer,
           "idx": {"paragraph": 0, "question": 0, "answer": 0}, "label": local.label}  # fmt: skip
    assert hub_example(get_task("superglue", "multirc"), row) == local


def test_unlabeled_hub_rows_have_no_label():
    row = {"premise": "a", "hypothesis": "b", "label": -1, "idx": 0}
    assert hub_example(get_task("superglue", "rte"), row).label is None
