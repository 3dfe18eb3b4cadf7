"""Language-modelling corpora (WikiText-2, Tiny Shakespeare), tokenized and cut into blocks.

Each split's text is tokenized as a whole and cut into ``block_size`` blocks; the last
partial block is dropped (as transformers' run_clm does) and the count is logged. A block
of b tokens gives b - 1 next-token predictions. WikiText-2 comes from local files
(``<root>/wikitext-2/{train,valid,test}.txt``, the tokenized ``wiki.*.tokens`` variant) or
from the hub (``Salesforce/wikitext``, config ``wikitext-2-v1``, the same text); its
whitespace-token counts are checked against the official ones. Tiny Shakespeare is one file
(``<root>/tinyshakespeare/input.txt``): the first 90 % of its characters train, the rest
validates (nanoGPT's split). ``shakespeare_char`` is the same text and split, read one
character per token with a vocabulary built from the training text (``CharVocabulary``), as
nanoGPT's ``shakespeare_char`` benchmark reads it; its table metric is ``val/loss``, the mean
next-character cross-entropy in nats.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from hypermoe.data.characters import CharVocabulary, UnknownCharacter
from hypermoe.data.readers import DataError, read_utf8
from hypermoe.data.sampling import EpochShuffleSampler, ResumableDataLoader, seeded_subset, validation_sampler
from hypermoe.data.sources import DataUnavailable
from hypermoe.data.tasks import TaskNaming

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Corpus(TaskNaming):
    name: str
    files: dict[str, str]  # split -> file under the data root ("all": one file, split by train_fraction)
    hub: tuple[str, str] | None = None  # (dataset, config) serving the same text, line per row
    train_fraction: float | None = None
    words: tuple[tuple[str, int], ...] = ()  # file (key of files) -> whitespace tokens + 1 per line end
    characters: bool = False  # one token per character, the vocabulary built from the training text
    metrics: tuple[str, ...] = ("perplexity",)  # the first selects checkpoints

    benchmark = "lm"

    def signature(self) -> dict:
        """Corpora read by the backbone's tokenizer can re-test any language model of that
        tokenizer; a character-level one only a model of the character vocabulary."""
        signature = {"kind": "causal_lm", "labels": [], "num_spans": 0}
        return {**signature, "vocabulary": "characters"} if self.characters else signature


CORPORA = {
    corpus.name: corpus
    for corpus in (
        Corpus(
            "wikitext2",
            {"train": "wikitext-2/train.txt", "validation": "wikitext-2/valid.txt", "test": "wikitext-2/test.txt"},
            hub=("Salesforce/wikitext", "wikitext-2-v1"),
            words=(("train", 2088628), ("validation", 217646), ("test", 245569)),
        ),
        Corpus("tinyshakespeare", {"all": "tinyshakespeare/input.txt"}, train_fraction=0.9, words=(("all", 242651),)),
        Corpus(
            "shakespeare_char",
            {"all": "tinyshakespeare/input.txt"},
            train_fraction=0.9,
            words=(("all", 242651),),
            characters=True,
            metrics=("loss", "perplexity"),
        ),
    )
}


def get_corpus(name: str) -> Corpus:
    if name not in CORPORA:
        raise ValueError(f"data.task={name!r} is not a language-modelling corpus; choose one of {sorted(CORPORA)}")
    return CORPORA[name]


def read_text(corpus: Corpus, split: str, data_dir: Path) -> str:
    """The raw text of one split: the local file, else the hub, else a clear error. The file's
    whitespace tokens (+1 per line) are logged and checked against the known count."""
    file = "all" if corpus.train_fraction is not None else split
    text, source = _read_file(corpus, file, split, Path(data_dir))
    words = count_words(text)
    expected = dict(corpus.words).get(file)
    if expected is not None and words != expected:
        raise DataError(f"{source}: {words} whitespace tokens in {corpus.name} {file}, expected {expected}")
    log.info("%s %s: %d whitespace tokens (+1 per line) from %s", corpus.name, file, words, source)
    if corpus.train_fraction is None:
        return text
    cut = int(len(text) * corpus.train_fraction)
    return text[:cut] if split == "train" else text[cut:]


def count_words(text: str) -> int:
    """Whitespace tokens plus one end-of-line token per line, as torch's word_language_model
    counts them. Lines end at "\\n" only, as they do when it iterates over the file: U+2028 and
    the like inside a line are text, which ``str.splitlines`` would count as line ends."""
    return sum(len(line.split()) + 1 for line in text.removesuffix("\n").split("\n"))


def _read_file(corpus: Corpus, file: str, split: str, data_dir: Path) -> tuple[str, str]:
    """(text, where it came from) of one of the corpus's files."""
    path = data_dir / corpus.files[file]
    if path.exists():
        text = read_utf8(path)
        if not text.strip():
            raise DataError(f"{path}: the file is empty")
        return text, str(path)
    if corpus.hub is None:
        raise DataUnavailable(
            f"{corpus.name}: no file at {path}. Put it there (set paths.data_dir or HYPERMOE_DATA "
            "to the folder that holds it)."
        )
    dataset, config = corpus.hub
    try:
        import datasets

        rows = datasets.load_dataset(dataset, config, split=split)["text"]
    except Exception as error:  # offline, no cache: all end here
        raise DataUnavailable(
            f"{corpus.name} {split}: no local file at {path}, and the Hugging Face hub ({dataset}, config "
            f"{config!r}) failed: {error}. Put the file there (set paths.data_dir or HYPERMOE_DATA), "
            "or run where the hub is reachable."
        ) from error
    text = "".join(row or " \n" for row in rows)  # the hub keeps the files' blank " \n" lines as ""
    return text, f"{dataset}/{config}"


def to_blocks(token_ids: list[int], block_size: int) -> torch.Tensor:
    """(num_blocks, block_size); the tail shorter than a block is dropped."""
    if block_size < 2:
        raise ValueError(f"data.block_size={block_size} must be >= 2: a block predicts its tokens after the first")
    num_blocks = len(token_ids) // block_size
    if num_blocks == 0:
        raise DataError(f"{len(token_ids)} tokens make no block of {block_size}")
    return torch.tensor(token_ids[: num_blocks * block_size]).view(num_blocks, block_size)


def _stack_blocks(rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.stack(rows)}


class LMDataModule(pl.LightningDataModule):
    """Blocks of one corpus. ``max_train_blocks`` subsamples training blocks (seeded) for
    CPU-scale runs; validation is always whole."""

    def __init__(
        self,
        task: str,
        data_dir: str,
        block_size: int,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int = 0,
        max_train_blocks: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.task = get_corpus(task)
        self.data_dir = Path(data_dir)
        self.block_size, self.batch_size, self.eval_batch_size = block_size, batch_size, eval_batch_size
        self.num_workers, self.max_train_blocks, self.seed = num_workers, max_train_blocks, seed
        self.tokenizer: Any = None
        self.blocks: dict[str, torch.Tensor] = {}

    def set_tokenizer(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def char_vocabulary(self, saved: list[str] | None = None) -> CharVocabulary:
        """A character corpus's vocabulary: the ``saved`` one of a run being resumed or re-tested,
        else the one its training text gives."""
        if not self.task.characters:
            raise ValueError(f"data.task={self.task.name!r} is read by the backbone's tokenizer, not by characters")
        if saved is not None:
            return CharVocabulary(saved)
        return CharVocabulary.from_text(read_text(self.task, "train", self.data_dir))

    def _token_ids(self, text: str, split: str) -> list[int]:
        try:
            return self.tokenizer(text, verbose=False)["input_ids"]  # one long sequence, cut below
        except UnknownCharacter as error:
            file = self.data_dir / self.task.files["all" if self.task.train_fraction is not None else split]
            characters = "".join(self.tokenizer.chars)
            raise DataError(
                f"{file}: {self.task.name} {split} split (positions counted from the split's start): {error} "
                f"(the run's {len(characters)} characters: {characters!r})"
            ) from None

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            raise RuntimeError("call set_tokenizer(tokenizer) before setup: the backbone decides the tokenizer")
        for split in ("validation",) if stage == "validate" else ("train", "validation"):
            if split in self.blocks:
                continue
            text = read_text(self.task, split, self.data_dir)
            ids = self._token_ids(text, split)
            blocks = to_blocks(ids, self.block_size)
            log.info(
                "%s %s: %d tokens -> %d blocks of %d (%d tail tokens dropped)",
                self.task.name, split, len(ids), len(blocks), self.block_size, len(ids) - blocks.numel(),
            )  # fmt: skip
            keep = seeded_subset(len(blocks), self.max_train_blocks, self.seed) if split == "train" else None
            if keep is not None:
                blocks = blocks[sorted(keep)]  # in corpus order
                log.info("%s train: subsampled to %d blocks (seed %d)", self.task.name, len(blocks), self.seed)
            self.blocks[split] = blocks

    def _loader(self, split: str, batch_size: int, sampler: Any) -> DataLoader:
        return ResumableDataLoader(
            self.blocks[split],
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_stack_blocks,
            generator=torch.Generator().manual_seed(self.seed),  # see TaskDataModule._loader
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, EpochShuffleSampler(self.blocks["train"], self.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.eval_batch_size, validation_sampler(self.blocks["validation"]))
