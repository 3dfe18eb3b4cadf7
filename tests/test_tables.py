"""Every paper table is a multirun grid whose every value composes into a valid run config."""

import pytest
from helpers import CONF
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

TABLES = sorted(path.stem for path in (CONF / "table").glob("*.yaml"))


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides, return_hydra_config=True)


@pytest.mark.parametrize("table", TABLES)
def test_every_value_of_every_table_grid_composes(table):
    cfg = _compose([f"table={table}"])
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.tags[0] == table.removesuffix("_cpu")
    assert ("cpu" in cfg.tags) == table.endswith("_cpu")  # a paper-scale and a CPU-scale setting each
    assert cfg.keep_checkpoints is False  # a grid's checkpoints would fill the disk (132 runs: ~60 GB on CPU)
    grid = {key: str(values).split(",") for key, values in cfg.hydra.sweeper.params.items()}
    first = [f"{key}={values[0]}" for key, values in grid.items()]
    for key, values in grid.items():  # each value once, the other keys at their first value
        for value in values:
            job = _compose([f"table={table}", *(o for o in first if not o.startswith(f"{key}=")), f"{key}={value}"])
            choices = job.hydra.runtime.choices
            # the job runs what its grid value names: the config group option, or the value itself
            assert (choices[key] if key in choices else str(OmegaConf.select(job, key))) == value, key
            if key == "model":
                assert job.model.variant == value
            subsampled = [int(tag.removeprefix("train_subsampled_")) for tag in job.tags if "subsampled" in tag]
            assert subsampled == ([job.data.max_train_examples] if job.data.get("max_train_examples") else [])


def test_ablation_rows_change_what_they_name():
    rows = {name: _compose([f"ablation={name}"]).model for name in ("agg_mean", "no_sharing", "bottleneck_16")}
    assert rows["agg_mean"].aggregation == "mean" and rows["no_sharing"].share_hypernetwork is False
    assert rows["bottleneck_16"].hypernetwork.bottleneck == 16
    adapter = _compose(["ablation=adapter_64"]).model
    assert adapter.variant == "topk_adapter" and adapter.adapter_bottleneck == 64
    assert _compose(["ablation=topk"]).model.variant == "topk"  # the reference row make_table --by ablation needs


@pytest.mark.parametrize("table", ["hyper_ablation", "hyper_ablation_cpu", "hyper_ablation_char_cpu"])
def test_ablation_tables_run_each_setting_once_with_the_topk_row(table):
    rows = str(_compose([f"table={table}"]).hydra.sweeper.params.ablation).split(",")
    # each row inside its table: a row may change only what the table's backbone sets (gating_noisy)
    models = {
        row: OmegaConf.to_container(_compose([f"table={table}", f"ablation={row}"]).model, resolve=True) for row in rows
    }
    assert "topk" in rows and len({str(model) for model in models.values()}) == len(rows)  # no setting twice


def test_the_qa_and_summarization_table_trains_each_dataset_at_the_papers_lr():
    """SQuAD at 5e-5, XSum and CNN/DailyMail at 3e-5 (docs/METHOD.md), ReCoRD at SuperGLUE's 1e-5,
    in one grid."""
    table = _compose(["table=qa_summarization"])
    lrs = {data: _compose(["table=qa_summarization", f"data={data}"]).optimizer.lr for data in table.lr_by_task}
    assert set(str(table.hydra.sweeper.params.data).split(",")) == set(lrs)  # every dataset of the grid has its lr
    assert lrs == {"squad": 5e-5, "record": 1e-5, "xsum": 3e-5, "cnn_dailymail": 3e-5}


@pytest.mark.parametrize("table", ["superglue_cpu", "glue_cpu", "lm_cpu"])
def test_the_cpu_tables_pin_the_gating_their_results_ran_with(table):
    """The committed *_cpu tables ran under noisy gating, before the backbones' default became renorm;
    their *_renorm_cpu twins repeat them under renorm."""
    for name, gating in ((table, "noisy"), (table.replace("_cpu", "_renorm_cpu"), "renorm")):
        cfg = _compose([f"table={name}", "model=hypermoe"])
        assert cfg.model.gating == gating and f"gating_{gating}" in cfg.tags, name
