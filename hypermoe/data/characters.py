"""A character-level vocabulary: one id per distinct character, in code-point order.

Built from a corpus's training text, as nanoGPT's ``data/shakespeare_char/prepare.py`` builds
its ``stoi`` / ``itos`` (from the whole file there; Tiny Shakespeare's training 90 % holds all
65 of its characters, so the two agree). A run saves the vocabulary (``vocabulary.json`` and its
checkpoints), and eval and resumed runs rebuild it from there, never from the text again. It is
called like a transformers tokenizer (``vocab(text)["input_ids"]``), so the language-modelling
data module and the model builder treat it as one.
"""

import json
from pathlib import Path
from typing import Any


class UnknownCharacter(ValueError):
    """A character of the text that the vocabulary does not hold."""

    def __init__(self, character: str, position: int, text: str):
        self.character, self.position = character, position
        self.line = text.count("\n", 0, position) + 1
        self.column = position - (text.rfind("\n", 0, position) + 1) + 1
        super().__init__(
            f"character {character!r} (U+{ord(character):04X}) at character {position} "
            f"(line {self.line}, column {self.column}) is not in the vocabulary"
        )


class CharVocabulary:
    """``chars[i]`` is the character of id i."""

    def __init__(self, chars: list[str] | str):
        chars = list(chars)
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError(f"a character vocabulary is a non-empty list of single characters, got {chars[:10]!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("a character vocabulary lists each character once")
        self.chars = chars
        self.ids = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocabulary":
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharVocabulary) and self.chars == other.chars

    def __hash__(self) -> int:
        return hash(tuple(self.chars))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.ids[c] for c in text]
        except KeyError as error:
            character = error.args[0]
            raise UnknownCharacter(character, text.index(character), text) from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
        """The transformers tokenizer call the data module makes (its keywords mean nothing here)."""
        return {"input_ids": self.encode(text)}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"chars": self.chars}, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "CharVocabulary":
        return cls(json.loads(Path(path).read_text(encoding="utf-8"))["chars"])
