"""`gic train` and `gic predict` end to end, and their exit codes on bad input."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gic.cli import main


@pytest.fixture(scope="module")
def trained(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    cfg = out / "cfg.yaml"
    cfg.write_text(f"data: {{dir: {synth_dir}, image_size: 32, batch_size: 16}}\n"
                   "model: {weights: none, dense_units: 16}\nphase1: {epochs: 2, augment: false}\n"
                   "phase2: {epochs: 1, unfreeze_layers: 1}\nprecision: fp32\n")
    result = CliRunner().invoke(main, ["train", "--config", str(cfg), "--out", str(out / "run")])
    assert result.exit_code == 0, result.output
    return out / "run", result.output


def test_train_writes_a_self_describing_folder(trained):
    run, output = trained
    assert "epoch   3/3 phase 2" in output and "test_accuracy" in output
    for name in ("config.yaml", "command.txt", "versions.json", "history.csv", "metrics.json", "model.keras",
                 "curves.png", "checkpoint/meta.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"best_val_accuracy", "best_epoch", "test_accuracy", "test_loss", "test_auc", "confusion_matrix",
            "phase1_images_per_s", "phase2_images_per_s", "phase1_time_s"} <= set(metrics)
    assert len((run / "history.csv").read_text().strip().splitlines()) == 1 + 3
    assert "tensorflow" in json.loads((run / "versions.json").read_text())


def test_train_resume_from_the_last_checkpoint(trained):
    run, _ = trained
    result = CliRunner().invoke(main, ["train", "--config", str(run / "config.yaml"), "--out", str(run), "--resume"])
    assert result.exit_code == 0, result.output
    assert "epoch   1/3" not in result.output  # nothing left to train: all 3 epochs were done


def test_predict_prints_label_and_probability(trained, synth_dir):
    run, _ = trained
    images = sorted((synth_dir / "test" / "men").iterdir())[:2]
    result = CliRunner().invoke(main, ["predict", str(run / "model.keras"), *map(str, images)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 + 2 and lines[0] == "file\tlabel\tp_men\tp_women\tthreshold"  # more: test_predict.py
    path, label, p_men, p_women, _ = lines[1].split("\t")
    assert path == str(images[0]) and label in ("men", "women") and float(p_men) + float(p_women) == pytest.approx(1, abs=2e-4)


@pytest.mark.parametrize("args, message", [
    (["train", "--config", "missing.yaml"], "missing.yaml: no such config file"),
    (["train", "--config", "{cfg}", "--set", "model.dropout_rate=2"], "model.dropout_rate = 2"),
    (["train", "--config", "{cfg}", "--set", "nonsense=1"], "--set nonsense: unknown key"),
    (["train", "--config", "{cfg}", "--set", "data.dir=/nonexistent/x", "--out", "{tmp}/o"], "/nonexistent/x"),
    (["predict", "{tmp}/nope.keras", "a.jpg"], "nope.keras: no such model file"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {weights: none}\n")
    args = [a.format(cfg=cfg, tmp=tmp_path) for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "gic.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "data" in out.stdout
