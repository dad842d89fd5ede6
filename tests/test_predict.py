"""`gic predict MODEL PATH...`: files and folders, a header, CSV/JSON output, bad files, batches."""

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from gic.cli import main


@pytest.fixture(scope="module")
def model_file(synth_dir, tmp_path_factory):
    """A tiny model trained for one epoch (32 px, random VGG16 weights): seconds on a CPU."""
    out = tmp_path_factory.mktemp("predict")
    cfg = out / "cfg.yaml"
    cfg.write_text(f"data: {{dir: {synth_dir}, image_size: 32, batch_size: 16}}\n"
                   "model: {weights: none, dense_units: 8}\nphase1: {epochs: 1, augment: false}\n"
                   "phase2: {epochs: 0}\nprecision: fp32\n")
    result = CliRunner().invoke(main, ["train", "--config", str(cfg), "--out", str(out / "run")])
    assert result.exit_code == 0, result.output
    return out / "run" / "model.keras"


@pytest.fixture
def photos(synth_dir, tmp_path):
    """A folder with 3 images, one in a sub-folder, plus a text file and a hidden file; and one loose image."""
    men, women = sorted((synth_dir / "test" / "men").iterdir()), sorted((synth_dir / "test" / "women").iterdir())
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    shutil.copy(men[0], folder / "a.png")
    shutil.copy(women[0], folder / "b.png")
    shutil.copy(women[1], folder / "more" / "c.png")
    (folder / "notes.txt").write_text("not an image")
    shutil.copy(men[1], folder / ".hidden.png")
    loose = tmp_path / "loose.png"
    shutil.copy(men[2], loose)
    return folder, loose


def _rows(text):
    lines = text.strip().splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def test_files_and_folders_print_a_header_and_one_row_per_image(model_file, photos):
    folder, loose = photos
    result = CliRunner().invoke(main, ["predict", str(model_file), str(loose), str(folder)])
    assert result.exit_code == 0, result.output
    header, rows = _rows(result.stdout)
    assert header == ["file", "label", "p_men", "p_women", "threshold"]
    # the loose file first, then the folder recursively in sorted order; hidden and non-image files skipped
    assert [r[0] for r in rows] == [str(loose), str(folder / "a.png"), str(folder / "b.png"),
                                    str(folder / "more" / "c.png")]
    for _, label, p_men, p_women, threshold in rows:
        assert float(p_men) + float(p_women) == pytest.approx(1, abs=2e-4) and threshold == "0.5000"
        assert label == ("women" if float(p_women) >= 0.5 else "men")
    assert "warning: skipped 1 file(s) that are not images" in result.stderr and "notes.txt" in result.stderr
    assert "warning: skipped 1 hidden file(s)" in result.stderr


def test_a_bad_file_is_named_the_others_go_on_and_the_exit_code_is_2(model_file, photos, tmp_path):
    folder, loose = photos
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    result = CliRunner().invoke(main, ["predict", str(model_file), str(tmp_path / "missing.png"), str(folder),
                                       str(loose)])
    assert result.exit_code == 2, result.output
    _, rows = _rows(result.stdout)
    assert len(rows) == 4 and all(r[1] in ("men", "women") for r in rows)
    assert f"error: {tmp_path / 'missing.png'}: no such file or folder" in result.stderr
    assert f"error: {folder / 'broken.jpg'}: not a readable image" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: 2 of 6 path(s) not predicted (named above)"
    assert "Traceback" not in result.output


def test_out_writes_csv_or_json_by_extension_or_format(model_file, photos, tmp_path):
    folder, _ = photos
    table = CliRunner().invoke(main, ["predict", str(model_file), str(folder)])
    _, rows = _rows(table.stdout)

    as_csv = CliRunner().invoke(main, ["predict", str(model_file), str(folder), "--out", str(tmp_path / "p.csv")])
    assert as_csv.exit_code == 0 and f"wrote {tmp_path / 'p.csv'}: 3 images" in as_csv.stdout, as_csv.output
    with open(tmp_path / "p.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert [r["file"] for r in written] == [r[0] for r in rows]
    assert [float(r["p_women"]) for r in written] == pytest.approx([float(r[3]) for r in rows], abs=1e-4)

    as_json = CliRunner().invoke(main, ["predict", str(model_file), str(folder), "--out", str(tmp_path / "p.out"),
                                        "--format", "json", "--threshold", "0.7"])
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads((tmp_path / "p.out").read_text())
    assert doc["classes"] == ["men", "women"] and doc["threshold"] == 0.7 and doc["errors"] == []
    assert [p["label"] for p in doc["predictions"]] == ["women" if p["p_women"] >= 0.7 else "men"
                                                        for p in doc["predictions"]]

    on_stdout = CliRunner().invoke(main, ["predict", str(model_file), str(folder), "--format", "csv"])
    assert on_stdout.stdout.splitlines()[0] == "file,label,p_men,p_women,threshold"
    unknown = CliRunner().invoke(main, ["predict", str(model_file), str(folder), "--out", str(tmp_path / "p.xlsx")])
    assert unknown.exit_code == 2 and "cannot tell the format" in unknown.output


def test_batches_are_one_predict_call_each_and_give_the_same_probabilities(model_file, synth_dir):
    from gic.model import load_model
    from gic.predict import Prediction, predict_files

    model = load_model(model_file)
    calls = []

    class Counting:
        input_shape, output_shape = model.input_shape, model.output_shape

        def predict(self, images, **kwargs):
            calls.append(len(images))
            return model.predict(images, **kwargs)

    files = sorted((synth_dir / "test" / "men").iterdir())[:5]
    small = list(predict_files(Counting(), files, batch_size=2))
    assert calls == [2, 2, 1] and all(isinstance(p, Prediction) for p in small)
    whole = list(predict_files(model, files, batch_size=64))
    assert np.allclose([p.probabilities for p in small], [p.probabilities for p in whole], atol=1e-5)
