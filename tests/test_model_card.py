"""`gic-tune retrain`: a line per epoch, and a model card beside every model plus a summary card."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from tune.results import rank_by_score
from tune.trials import trial_table

ROOT = Path(__file__).resolve().parents[1]
EPOCH_LINE = re.compile(r"^    epoch +\d+/\d+ phase [12]  loss \d+\.\d{4}  val_accuracy \d\.\d{4}  \(\d+\.\d+s\)$")


def test_retrain_prints_epochs_and_writes_model_cards_whose_command_rebuilds_the_model(tiny_experiment, tmp_path,
                                                                                       monkeypatch):
    folder, _, _ = tiny_experiment
    monkeypatch.chdir(tmp_path)  # the cards' rebuild commands write under results/ of the current folder
    out = tmp_path / "retrain"
    # In a fresh process, as a user runs it: the rebuild below is a fresh process too, and a training
    # that follows other trainings in one process is not bit-identical to a fresh one (a known gap).
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "tune.cli", "retrain", str(folder), "--out", str(out), "--seeds",
                             "2", "--compare-baseline"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    best = rank_by_score(trial_table(folder)).iloc[0]
    runs = sorted(out.glob("*/seed*/metrics.json"))
    assert len(runs) == 4
    epochs = json.loads(runs[0].read_text())["epochs"]
    assert len([line for line in result.stdout.splitlines() if EPOCH_LINE.match(line)]) == 4 * epochs, result.stdout

    for metrics_file in runs:
        run, metrics = metrics_file.parent, json.loads(metrics_file.read_text())
        card = json.loads((run / "model_card.json").read_text())
        text = (run / "MODEL_CARD.md").read_text()
        assert card["model"]["name"] == metrics["name"] and card["model"]["seed"] == metrics["seed"]
        assert card["test"]["test_accuracy"] == metrics["test_accuracy"] and card["config"]["seed"] == metrics["seed"]
        assert card["data"]["images"] == {"train": {"men": 24, "women": 24}, "validation": {"men": 6, "women": 6},
                                          "test": {"men": 12, "women": 12}} and card["data"]["fingerprint"]
        seeds = [json.loads(p.read_text()) for p in run.parent.glob("seed*/metrics.json")]
        assert sorted(card["over_seeds"]["seeds"]) == sorted(m["seed"] for m in seeds)
        assert card["over_seeds"]["test_accuracy"]["mean"] == pytest.approx(
            sum(m["test_accuracy"] for m in seeds) / 2)
        assert "tensorflow" in card["versions"] and card["rebuild"].startswith("gic train --config ")
        if metrics["name"] == "baseline":
            assert card["search"] is None and "seed recipe" in text
        else:
            assert card["search"]["trial_id"] == best["trial_id"] and card["search"]["experiment"] == str(folder.resolve())
            assert card["search"]["best_val_accuracy"] == pytest.approx(best["best_val_accuracy"])
            assert f"trial: `{best['trial_id']}`" in text
        assert card["rebuild"] in text and " ± " in text and "| test | 12 | 12 | 24 |" in text

    summary = json.loads((out / "model_card.json").read_text())
    assert [c["name"] for c in summary["configurations"]] == ["baseline", f"best-{best['trial_id']}"]
    assert all(len(c["models"]) == 2 and len(c["rebuild"]) == 2 for c in summary["configurations"])
    top = (out / "MODEL_CARD.md").read_text()
    assert f"best-{best['trial_id']}" in top and summary["configurations"][1]["rebuild"][0] in top

    # the rebuild command, run as a user would (a fresh process, in the current folder), trains the same model
    card = json.loads((out / f"best-{best['trial_id']}" / "seed0" / "model_card.json").read_text())
    args = shlex.split(card["rebuild"])
    rebuilt = subprocess.run([sys.executable, "-m", "gic.cli", *args[1:]], cwd=tmp_path, env=env, capture_output=True,
                             text=True, check=False)
    assert rebuilt.returncode == 0, rebuilt.stderr
    again = json.loads((tmp_path / args[-1] / "metrics.json").read_text())
    assert again["test_accuracy"] == pytest.approx(card["test"]["test_accuracy"], abs=1e-6)
