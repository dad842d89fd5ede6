"""Warnings for the user (the loader's skip summaries, a bad image skipped) are one `warning:` line
each in every command, without Python's `FILE:LINE: UserWarning:` prefix and source line."""

import shutil
import warnings

from click.testing import CliRunner

from gic.cli import main, warnings_as_lines


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
