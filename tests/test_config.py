"""Config: defaults are the seed recipe, overrides, and one-line errors naming the key."""

from pathlib import Path

import pytest

from gic.config import AUGMENT_PRESETS, TrainConfig, load_config, save_config
from gic.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_defaults_are_the_seed_recipe():
    cfg = TrainConfig()
    assert (cfg.data.image_size, cfg.data.batch_size) == (180, 32)
    assert (cfg.model.weights, cfg.model.dense_units, cfg.model.dropout_rate) == ("imagenet", 256, 0.5)
    assert cfg.model.augmentation.model_dump() == AUGMENT_PRESETS["seed"]
    assert (cfg.phase1.optimizer, cfg.phase1.learning_rate, cfg.phase1.epochs) == ("rmsprop", 1e-3, 30)
    assert (cfg.phase2.optimizer, cfg.phase2.learning_rate, cfg.phase2.epochs) == ("adam", 1e-5, 30)
    assert cfg.phase2.unfreeze_layers == 3 and cfg.total_epochs == 60


def test_baseline_yaml_is_exactly_the_seed_recipe():
    cfg = load_config(CONFIGS / "baseline.yaml")
    # only where the data comes from and the precision are spelled differently from the defaults
    assert cfg.model_copy(update={"data": cfg.data.model_copy(update={"source": "folder"}),
                                  "precision": "auto"}) == TrainConfig()


def test_overrides_and_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "demo-train.yaml", ["phase1.epochs=3", "model.augmentation=strong",
                                                    "data.cache_dir=/tmp/x", "phase2.learning_rate=2e-4"])
    assert cfg.phase1.epochs == 3 and cfg.model.augmentation.rotation == AUGMENT_PRESETS["strong"]["rotation"]
    assert cfg.phase2.learning_rate == 2e-4
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert cfg.with_overrides({"phase2.epochs": 0}).fine_tunes is False


@pytest.mark.parametrize("override, expected", [
    ("model.dropout_rate=1.0", "model.dropout_rate = 1.0"),
    ("model.dropout_rate=-0.1", "model.dropout_rate = -0.1"),
    ("phase1.epochs=-1", "phase1.epochs = -1"),
    ("phase2.unfreeze_layers=14", "phase2.unfreeze_layers = 14"),
    ("data.image_size=31", "data.image_size = 31"),
    ("phase1.learning_rate=0", "phase1.learning_rate = 0"),
    ("phase2.learning_rate=-1e-5", "phase2.learning_rate = -1e-05"),
    ("data.batch_size=0", "data.batch_size = 0"),
    ("phase1.epochs=many", "phase1.epochs = 'many'"),
    ("phase1.optimizer=adagrad", "phase1.optimizer = 'adagrad'"),
    ("model.augmentation=wild", "unknown preset 'wild'"),
])
def test_bad_values_give_one_line_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "demo-train.yaml", [override])
    text = str(err.value)
    assert expected in text and "\n" not in text and str(CONFIGS / "demo-train.yaml") in text


def test_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nmodel:\n  dropout_rate: [0.5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: YAML syntax error at line \d+"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["phase1.epochs"])
    (tmp_path / "empty.yaml").write_text("")
    assert load_config(tmp_path / "empty.yaml") == TrainConfig()


@pytest.mark.parametrize("override, expected", [
    ("phase1.epoch=3", "--set phase1.epoch: unknown key; did you mean phase1.epochs?"),
    ("dropout=0.3", "--set dropout: unknown key; did you mean model.dropout_rate?"),
    ("phase1.dropout_rate=0.3", "did you mean model.dropout_rate?"),  # the right name in the wrong section
    ("model.augmentation.rotate=0.1", "did you mean model.augmentation.rotation?"),
    ("model.colour=red", "--set model.colour: unknown key; model has weights, dense_units"),  # nothing close
    ("phase1.lr=0.1", "--set phase1.lr: unknown key; phase1 has epochs"),  # never the section itself
])
def test_an_unknown_set_key_names_the_option_and_the_closest_valid_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "demo-train.yaml", [override])
    assert expected in str(err.value) and str(err.value).startswith("--set ")
    assert "\n" not in str(err.value) and "demo-train.yaml" not in str(err.value)


def test_an_unknown_key_in_a_file_names_the_file_and_the_closest_valid_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("phase1: {epoch: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert str(err.value) == f"{cfg}: unknown key 'phase1.epoch'; did you mean phase1.epochs?"
    # a section given whole by --set is the option's, not the file's
    with pytest.raises(ConfigError, match=r"^--set phase2\.epoch: unknown key; did you mean phase2\.epochs\?$"):
        load_config(None, ["phase2={epoch: 1}"])
    # `with_overrides` (gic-tune retrain --set) refuses the same way
    with pytest.raises(ConfigError, match=r"^--set seeed: unknown key; did you mean seed\?$"):
        TrainConfig().with_overrides(["seeed=1"])


def test_an_unknown_key_in_a_search_file_names_the_file_or_option_and_the_closest_valid_key(tmp_path):
    import yaml

    from tune.config import load_search_config
    from searches import tiny_search

    def error(edit=None, sets=(), base=None):
        raw = tiny_search(tmp_path / "data", tmp_path / "results")
        if edit:
            edit(raw)
        (tmp_path / "search.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError) as err:
            load_search_config(tmp_path / "search.yaml", list(sets))
        return str(err.value)

    path = tmp_path / "search.yaml"
    assert error(sets=["search.max_concurent=2"]) == \
        "--set search.max_concurent: unknown key; did you mean search.max_concurrent?"
    assert error(sets=["trainer.phase1.epoch=3"]).endswith("did you mean trainer.phase1.epochs?")
    assert error(sets=["num_samples=3"]).endswith("did you mean search.num_samples?")
    assert error(sets=["phase1.epoch=3"]).endswith("did you mean trainer.phase1.epochs?")  # not space.phase1.*
    assert error(sets=["space.model.dropout_rate.hgh=0.3"]).endswith("did you mean space.model.dropout_rate.high?")
    assert error(lambda r: r["trainer"]["phase1"].update(epoch=3)) == \
        f"{path}: unknown key 'trainer.phase1.epoch'; did you mean trainer.phase1.epochs?"
    assert error(lambda r: r["search"]["resources_per_trial"].update(gpus=1)) == \
        f"{path}: unknown key 'search.resources_per_trial.gpus'; did you mean search.resources_per_trial.gpu?"
    assert error(lambda r: r["space"]["model"].update(dropout={"low": 0.1, "high": 0.2})) == \
        f"{path}: unknown key 'space.model.dropout'; did you mean space.model.dropout_rate?"
    assert error(lambda r: r.update(serach={})) == f"{path}: unknown key 'serach'; did you mean search?"
    (tmp_path / "base.yaml").write_text("phase2: {unfreeze: 2}\n")  # in the base file: that file is named
    assert error(lambda r: r.update(base="base.yaml")) == \
        f"{tmp_path / 'base.yaml'}: unknown key 'phase2.unfreeze'; did you mean phase2.unfreeze_layers?"
