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
    ("model.colour=red", "unknown key 'model.colour'"),
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
