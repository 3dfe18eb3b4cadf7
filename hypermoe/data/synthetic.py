"""A small generated task that needs no files: is "red" more frequent than "blue"?

Sentences of 6-24 color words; ties are never generated. A tiny random BERT learns it in a
few hundred steps, so tests and demos can show learning without any download.
"""

import random

from hypermoe.data.examples import Example
from hypermoe.data.tasks import Task

SYNTHETIC = Task(
    name="majority",
    benchmark="synthetic",
    folder="",
    files={},
    readers={},
    kind="classification",
    num_labels=2,
    metrics=("accuracy",),
    rows={"train": 512, "validation": 128},
    hub_config="",
    labels=("blue", "red"),
)
_WORDS = ("red", "blue", "green", "yellow")


def synthetic_split(split: str, seed: int) -> list[Example]:
    rng = random.Random(f"{seed}-{split}")
    examples = []
    while len(examples) < SYNTHETIC.rows[split]:
        words = rng.choices(_WORDS, k=rng.randint(6, 24))
        red, blue = words.count("red"), words.count("blue")
        if red != blue:
            examples.append(Example(text_a=" ".join(words), label=int(red > blue)))
    return examples
