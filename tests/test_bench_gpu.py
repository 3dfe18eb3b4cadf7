"""The GPU script's own flow, run on CPU: ``bench_gpu.sh --smoke`` runs its three stages with the
GPU run's flags at each script's tiny sizes. No GPU runs here; what is CUDA-only in the scripts
(device placement, synchronisation, the allocator's counters) is not covered."""

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "bench_gpu.sh"


def run_script(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**os.environ, "PYTHON": python},
        capture_output=True,
        text=True,
        timeout=600,
    )


def stages(out: Path) -> dict[str, int]:
    """stage name -> exit status, from stages.tsv."""
    rows = (line.split("\t") for line in (out / "stages.tsv").read_text().splitlines()[1:])
    return {name: int(status) for name, status, _seconds, _limit in rows}


def hide_pydantic(folder: Path) -> str:
    """A PYTHONPATH under which ``import pydantic`` fails, as on a GPU image without it."""
    (folder / "pydantic").mkdir(parents=True)
    (folder / "pydantic" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pydantic'\", name='pydantic')\n"
    )
    return str(folder)


def wheel_of_installed(package: str, folder: Path) -> Path:
    """A wheel of the installed ``package``'s files, built offline (the tests cannot reach PyPI,
    where experiments/gpu_wheels.sh gets the real ones)."""
    source = folder / "source"
    shutil.copytree(Path(importlib.import_module(package).__file__).parent, source / package)
    (source / "pyproject.toml").write_text(
        f'[project]\nname = "{package}"\nversion = "0"\n[tool.setuptools.packages.find]\ninclude = ["{package}*"]\n'
    )
    wheels = folder / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    return wheels


def test_without_the_projects_packages_or_their_wheels_it_stops_first_and_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", hide_pydantic(tmp_path / "hide"))
    monkeypatch.setenv("WHEELS", str(tmp_path / "no_wheels"))
    result = run_script("--smoke", str(tmp_path / "gpu"))
    assert result.returncode == 1
    assert "No module named 'pydantic'" in result.stdout + result.stderr
    assert "bash experiments/gpu_wheels.sh writes the wheels it needs to .whl" in result.stdout
    assert not (tmp_path / "gpu" / "stages.tsv").exists()


def test_a_missing_package_is_installed_from_the_wheels_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", hide_pydantic(tmp_path / "hide"))
    monkeypatch.setenv("WHEELS", str(wheel_of_installed("pydantic", tmp_path)))
    result = run_script(str(tmp_path / "gpu"))  # past the imports, it stops at the CUDA check
    assert result.returncode == 1
    assert "installing the wheels in" in result.stdout and "pydantic-0-py3-none-any.whl" in result.stdout
    assert "No module named" not in result.stdout + result.stderr
    assert "bench_gpu.sh needs a CUDA device" in result.stdout + result.stderr


def test_without_a_gpu_it_stops_at_once_and_says_why(tmp_path):
    result = run_script(str(tmp_path / "gpu"))
    assert result.returncode == 1
    assert "bench_gpu.sh needs a CUDA device" in result.stdout + result.stderr
    assert not (tmp_path / "gpu" / "stages.tsv").exists()


def test_without_the_tokenizers_it_stops_before_any_stage_and_names_them(tmp_path, monkeypatch):
    """The GPU machine has no hub: a copy without the tokenizers folder would fail in every stage."""
    monkeypatch.setenv("HYPERMOE_TOKENIZERS", str(tmp_path / "no_tokenizers"))
    result = run_script("--smoke", str(tmp_path / "gpu"))
    assert result.returncode == 1
    for backbone, folder in [("switch_base_8", "t5"), ("gpt2_moe", "gpt2"), ("gpt2_tiny", "gpt2")]:
        assert f"tokenizer unusable for {backbone}: " in result.stdout + result.stderr
        assert str(tmp_path / "no_tokenizers" / folder) in result.stdout + result.stderr
    assert not (tmp_path / "gpu" / "stages.tsv").exists()


def test_the_tokenizers_every_stage_loads_load(tokenizers_root):
    sys.path.insert(0, str(ROOT / "experiments"))
    from check_tokenizers import unusable_tokenizers

    assert unusable_tokenizers(["switch_base_8", "gpt2_moe", "minilm", "gpt2_tiny", "switch_tiny"]) == []


def test_a_tokenizer_folder_that_is_there_but_does_not_load_is_named(tokenizers_root, tmp_path, monkeypatch):
    """A copy made for the GPU machine may carry a folder without its files, or a damaged file:
    found is not enough, it must load."""
    sys.path.insert(0, str(ROOT / "experiments"))
    from check_tokenizers import unusable_tokenizers

    (tmp_path / "t5").mkdir()  # no spiece.model
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "vocab.json").write_text("{not json")
    (tmp_path / "gpt2" / "merges.txt").write_text((tokenizers_root / "gpt2" / "merges.txt").read_text())
    monkeypatch.setenv("HYPERMOE_TOKENIZERS", str(tmp_path))
    switch, gpt2 = unusable_tokenizers(["switch_base_8", "gpt2_tiny"])
    assert switch.startswith(f"switch_base_8: {tmp_path / 't5'} holds no vocabulary for T5Tokenizer")
    assert gpt2.startswith(f"gpt2_tiny: the GPT2Tokenizer files in {tmp_path / 'gpt2'} do not load")


def test_a_backbone_that_is_not_a_config_option_is_named_with_the_options(capsys):
    sys.path.insert(0, str(ROOT / "experiments"))
    from check_tokenizers import main

    with pytest.raises(SystemExit) as exit_status:
        main(["switch_base8"])
    assert exit_status.value.code == 2
    assert "invalid choice: 'switch_base8' (choose from 'bert_tiny', 'gpt2_moe'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("tokenizers_root")  # gpt2_tiny and switch_tiny need the real tokenizer files
def test_a_failed_stage_does_not_stop_the_next_ones(tmp_path):
    # The layer benchmark fails at once through this interpreter (an injected failure); the two
    # other stages run on the real one.
    python = tmp_path / "python"
    python.write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = experiments/bench_moe.py ]; then echo "injected failure" >&2; exit 3; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    out = tmp_path / "gpu"
    result = run_script("--smoke", str(out), python=str(python))
    assert result.returncode == 1, result.stdout + result.stderr
    assert stages(out) == {"layers": 3, "training": 0, "paper_dryrun": 0}
    log = (out / "bench_gpu.log").read_text()
    assert "injected failure" in log and "== layers FAILED (exit status 3" in log
    assert "torch" in (out / "machine.txt").read_text()
    training = json.loads((out / "bench_train_gpu.json").read_text())
    assert (training["device"], training["dtype"], training["complete"]) == ("cpu", "bf16", True)
    dryrun = json.loads((out / "paper_dryrun" / "paper_dryrun.json").read_text())
    assert (dryrun["dtype"], dryrun["optimizer"], dryrun["complete"]) == ("bf16", "step", True)
    assert len(dryrun["models"]) == dryrun["models_planned"] == 8
    assert not (out / "bench_moe_gpu.json").exists()
