"""Nothing lost, nothing silent: `gic train` and `gic-tune retrain` never replace or damage a user's
earlier results, and every file they write is complete or absent after a kill at any point."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gic.checkpoint import find_checkpoint, read_checkpoint, write_checkpoint
from gic.cli import main as gic_main

OUTPUTS = ("config.yaml", "command.txt", "versions.json", "history.csv", "metrics.json", "model.keras", "curves.png")


def _config(folder: Path, synth_dir: Path) -> Path:
    cfg = folder / "cfg.yaml"
    cfg.write_text(f"data: {{dir: {synth_dir}, image_size: 32, batch_size: 16}}\n"
                   "model: {weights: none, dense_units: 16}\nphase1: {epochs: 2, augment: false}\n"
                   "phase2: {epochs: 2, unfreeze_layers: 1}\nprecision: fp32\n")
    return cfg


def _digests(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in OUTPUTS if (folder / name).is_file()}


@pytest.fixture(scope="module")
def finished(synth_dir, tmp_path_factory):
    """A finished `gic train` run: (config file, output folder)."""
    tmp = tmp_path_factory.mktemp("noloss")
    cfg = _config(tmp, synth_dir)
    result = CliRunner().invoke(gic_main, ["train", "--config", str(cfg), "--out", str(tmp / "run")])
    assert result.exit_code == 0, result.output
    return cfg, tmp / "run"


def test_resume_of_a_finished_run_says_so_and_touches_nothing(finished):
    cfg, run = finished
    before = _digests(run)
    result = CliRunner().invoke(gic_main, ["train", "--config", str(cfg), "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "already complete (4/4 epochs" in result.output and "nothing to resume" in result.output
    assert _digests(run) == before
    metrics = json.loads((run / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert 0 <= metrics["best_val_accuracy"] <= 1 and metrics["best_epoch"] >= 1


def test_a_rerun_never_replaces_an_earlier_run_silently(finished):
    cfg, run = finished
    before = _digests(run)
    for extra in ([], ["--set", "model.dropout_rate=0.1"]):
        result = CliRunner().invoke(gic_main, ["train", "--config", str(cfg), "--out", str(run), *extra])
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: {run}: holds an earlier run") and "--overwrite" in result.output
    result = CliRunner().invoke(gic_main, ["train", "--config", str(cfg), "--out", str(run), "--resume",
                                           "--set", "phase1.epochs=3"])
    assert result.exit_code == 2 and "phase1.epochs 2 -> 3" in result.output, result.output
    assert _digests(run) == before


def test_overwrite_replaces_and_files_follow_the_umask(finished, synth_dir, tmp_path):
    cfg, run = finished
    copy = tmp_path / "run"
    CliRunner().invoke(gic_main, ["train", "--config", str(cfg), "--out", str(copy)])
    old = json.loads((copy / "metrics.json").read_text())
    mask = os.umask(0o022)
    try:
        result = CliRunner().invoke(gic_main, ["train", "--config", str(cfg), "--out", str(copy), "--overwrite",
                                               "--set", "phase2.epochs=0"])
    finally:
        os.umask(mask)
    assert result.exit_code == 0, result.output
    new = json.loads((copy / "metrics.json").read_text())
    assert old["best_epoch"] >= 1 and new["best_epoch"] <= 2  # phase 2 gone: the new run's metrics
    for path in [copy, copy / "checkpoint", *[copy / n for n in OUTPUTS], *(copy / "checkpoint").iterdir()]:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o755 if path.is_dir() else 0o644), (path.name, oct(mode))


def test_a_kill_between_the_two_renames_of_a_checkpoint_write_is_recovered(tmp_path, monkeypatch):
    state = {"epoch": 1, "phase": 1, "history": [], "best_epoch": 1, "best_value": 0.5, "timing": {},
             "variables": [np.ones(3)], "optimizer": [np.zeros(2)], "best_weights": None}
    write_checkpoint(tmp_path / "checkpoint", state)
    real_replace = os.replace

    def die_before_the_new_one_moves_in(src, dst):
        if Path(dst) == tmp_path / "checkpoint":
            raise KeyboardInterrupt  # the process dies here: the old one moved away, the new one not in
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_before_the_new_one_moves_in)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path / "checkpoint", {**state, "epoch": 2, "variables": [np.full(3, 2.0)]})
    monkeypatch.undo()
    assert not (tmp_path / "checkpoint").exists()
    found = find_checkpoint(tmp_path / "checkpoint")
    assert found == tmp_path / "checkpoint"  # the newer complete folder, renamed back into place
    restored = read_checkpoint(found)
    assert restored["epoch"] == 2 and restored["variables"][0].tolist() == [2.0, 2.0, 2.0]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def _valid(path: Path) -> bool:
    """A complete output: JSON that parses strictly, a zip (model.keras) that reads, a whole PNG, ..."""
    data = path.read_bytes()
    if path.suffix == ".json":
        json.loads(data, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    elif path.suffix == ".keras":
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    elif path.suffix == ".png":
        return data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82")
    elif path.suffix == ".csv":
        lines = data.decode().splitlines()
        return len(lines) >= 2 and all(line.count(",") == lines[0].count(",") for line in lines)
    return len(data) > 0


@pytest.mark.slow
def test_gic_train_killed_at_random_points_resumes_to_the_uninterrupted_result(finished, tmp_path):
    """SIGKILL `gic train` at random moments (start-up, epochs, checkpoint and output writes), each
    time check that every output is whole, then `--resume` until it finishes: the history is the
    uninterrupted run's."""
    cfg, reference = finished
    out = tmp_path / "run"
    env = {**os.environ, "GIC_TF_VERBOSE": "0"}
    rng = random.Random(0)
    for attempt in range(6):
        args = [sys.executable, "-m", "gic.cli", "train", "--config", str(cfg), "--out", str(out)]
        if find_checkpoint(out / "checkpoint") is not None:
            args.append("--resume")
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(rng.uniform(3.0, 12.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        for name in OUTPUTS:
            if (out / name).is_file():
                assert _valid(out / name), (attempt, name)
        checkpoint = find_checkpoint(out / "checkpoint")
        if checkpoint is not None:
            assert read_checkpoint(checkpoint)["epoch"] >= 1
    args = [sys.executable, "-m", "gic.cli", "train", "--config", str(cfg), "--out", str(out)]
    if find_checkpoint(out / "checkpoint") is not None:
        args.append("--resume")
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in OUTPUTS:
        assert _valid(out / name), name
    import pandas as pd

    got, want = pd.read_csv(out / "history.csv"), pd.read_csv(reference / "history.csv")
    assert got["epoch"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(got["val_loss"], want["val_loss"], rtol=1e-4, atol=1e-5)
