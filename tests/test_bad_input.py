"""Bad-input catalogue: every user mistake is one `error:` line naming the file, key or value,
exit code 2, no traceback, and nothing half-written (no --out folder without metrics.json, no new
experiment folder, no cache file or temporary left in the cache folder).

Odd but valid images are accepted and converted (exit 0). The commands run through the real CLI
(click's CliRunner on gic.cli.main / tune.cli.main); three run as subprocesses to show that no
traceback reaches a terminal. "here" cases are tested in this file; the others by the test named.

| #  | case                                   | command                                                       | expected (one line)                                                   | test |
|----|----------------------------------------|---------------------------------------------------------------|-----------------------------------------------------------------------|------|
| 1  | data folder missing                    | gic train --set data.dir=D                                   | error: D: no such data folder; expected {train,validation,test}/...   | here |
| 2  | split missing                          | gic train (D without validation/)                             | error: D/validation/men: missing folder; expected ...                 | here |
| 3  | class missing                          | gic train (D without train/women/)                            | error: D/train/women: missing folder; expected ...                    | here |
| 4  | class empty                            | gic train (train/women/ has no images)                        | error: D/train/women: no images (expected .jpg, ... files)            | here |
| 5  | corrupt JPEG                           | gic train                                                     | error: FILE: not a readable image (...)                               | here (+ subprocess) |
| 6  | truncated PNG                          | gic train                                                     | error: FILE: not a readable image (image file is truncated ...)       | here |
| 7  | zero-byte file                         | gic train                                                     | error: FILE: empty file (0 bytes); expected an image                  | here |
| 8  | text file named .jpg                   | gic train                                                     | error: FILE: not a readable image (unknown or corrupt format)         | here |
| 9  | symlink loop named .jpg                | gic train                                                     | error: FILE: not a readable image ([Errno 40] Too many levels ...)    | here |
| 10 | huge image (10000x10000 PNG, 150 kB)   | gic train                                                     | error: FILE: image too large to decode safely (10000x10000 px, ...)   | here; big JPEGs decode at reduced scale: test_data.py::test_decode_big_jpeg_uses_draft_and_bombs_are_refused |
| 11 | duplicates across splits (leakage)     | gic data check D                                              | error: FILE: same content in several splits (leakage): ... ; exit 2   | here |
| 12 | grayscale, RGBA, CMYK, palette, 16-bit, 1x1 images; a folder symlink loop | gic data check D; gic train | exit 0; `warning: FILE: <mode> image, converted ...` / `tiny image` | here |
| 13 | unknown key                            | gic-tune run --set search.max_concurent=2                     | error: --set search.max_concurent: unknown key; did you mean search.max_concurrent? (in a file: error: FILE: unknown key 'KEY'; did you mean ...) | here (+ subprocess); trainer keys and files: test_cli_train.py, test_config.py |
| 14 | wrong type                             | gic train --set phase1.epochs=many                            | error: FILE: phase1.epochs = 'many': Input should be a valid integer  | here |
| 15 | out-of-range value                     | gic-tune run --set trainer.phase2.unfreeze_layers=14          | error: FILE: trainer.phase2.unfreeze_layers = 14: ... less than or equal to 13 | here |
| 16 | empty search range                     | gic-tune run --set space.model.dropout_rate.low=0.3 (high 0.3) | error: FILE: space.model.dropout_rate: empty or inverted range ...   | here |
| 17 | inverted search range                  | gic-tune run (low 0.5, high 0.2)                              | error: FILE: space.model.dropout_rate: empty or inverted range ...    | here |
| 18 | YAML syntax error                      | gic train --config bad.yaml; gic-tune run --config bad.yaml   | error: bad.yaml: YAML syntax error at line 3, column N: ...           | here |
| 19 | num_samples of 0                       | gic-tune run --set search.num_samples=0                       | error: FILE: search.num_samples = 0: Input should be greater than or equal to 1 | here |
| 20 | GPU share above 1, not whole           | gic-tune run --set search.resources_per_trial.gpu=1.5         | error: FILE: search.resources_per_trial.gpu = 1.5: a GPU share above 1 must be a whole number ... | here |
| 21 | GPU share negative                     | gic-tune run --set search.resources_per_trial.gpu=-0.5        | error: FILE: search.resources_per_trial.gpu = -0.5: ...               | here |
| 22 | GPUs requested, none in the local Ray  | gic-tune run --set search.resources_per_trial.gpu=0.25 (CPU machine) | error: search.resources_per_trial.gpu = 0.25 but the Ray cluster has 0 GPU(s); set it to 0 ... | here |
| 23 | GPU share too small for the margin     | (inside a trial: gpu 0.1 of 8 GB)                             | search.resources_per_trial.gpu = 0.1: ... give each trial a larger share | test_tune_space.py::test_a_share_smaller_than_the_margin_is_refused |
| 24 | weights file with the wrong shapes     | gic train --set model.weights=wrong.weights.h5                | error: model.weights: FILE: not a Keras VGG16 no-top weights file (...) | here |
| 25 | model file that is not a model         | gic predict junk.keras IMAGE                                  | error: FILE: not a Keras model file (...)                             | here; Lambda refused: test_model.py::test_safe_loading_refuses_lambda_layers_and_non_models |
| 26 | results folder that is not an experiment | gic-tune trials/report/retrain DIR                          | error: DIR: not an experiment folder (no experiment_state-*.json) ... | test_tune_inspect.py::test_bad_input_is_one_line_and_exit_2 |
| 27 | --resume / --warm-start on a folder that is not an experiment | gic-tune run --resume; gic-tune run --warm-start DIR | error: PATH: no experiment to resume (no tuner.pkl) / not an experiment folder | here |
| 28 | missing Kaggle credentials             | gic data download; gic train --set data.source=kaggle         | error: no Kaggle credentials: save kaggle.json ... or set KAGGLE_USERNAME and KAGGLE_KEY | here (train, nothing left in D-raw); download: test_data.py::test_missing_kaggle_credentials_say_how_to_provide_them |
| 29 | results folder not writable            | gic train --out FILE/out; gic-tune run --set search.storage_path=FILE/results | error: FILE/out: not writable (Not a directory) | here (+ subprocess) |
| 30 | no room on the disk for the data cache | gic train (disk_usage reports 1 MiB free)                     | error: CACHE: no room for the data cache (N images at S px need X, Y free); ... | here |
| 31 | archive with traversal, absolute, link or device members | safe_extract                              | FILE: refusing member NAME (...); nothing was extracted                 | test_data.py::test_safe_extract_refuses_unsafe_{zip,tar}_members_before_writing |
| 32 | missing config file / --set without = | gic train --config missing.yaml                              | error: missing.yaml: no such config file                              | test_cli_train.py::test_bad_input_is_one_line_and_exit_code_2, test_config.py::test_file_errors |
| 33 | bad command line: option out of range, bad choice, missing option, unknown command | gic-tune run --num-samples 0 | error: gic-tune run: Invalid value for '--num-samples': 0 is not in the range x>=1. (see --help) | here |
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from gic.cli import main as gic_main
from tune.cli import main as tune_main
from searches import tiny_search

ROOT = Path(__file__).resolve().parents[1]
SPLITS, CLASSES = ("train", "validation", "test"), ("men", "women")


# ------------------------------------------------------------------------------------ helpers
def _image(seed: int, size: int = 40, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB").convert(mode)


def make_data(root: Path, per_class: int = 3) -> Path:
    """A valid tiny dataset: `per_class` distinct 40 px PNGs per split and class."""
    n = 0
    for split in SPLITS:
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                _image(n := n + 1).save(folder / f"{cls}_{i}.png")
    return root


def jpeg_bytes(seed: int = 0) -> bytes:
    import io

    buf = io.BytesIO()
    _image(seed, 64).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(seed: int = 0) -> bytes:
    import io

    buf = io.BytesIO()
    _image(seed, 64).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A fresh cache folder per test (to see what a failed run left there) and a tiny train config."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GIC_CACHE_DIR", str(cache))
    cfg = tmp_path / "train.yaml"
    cfg.write_text("data: {image_size: 32, batch_size: 4}\nmodel: {weights: none, dense_units: 8}\n"
                   "phase1: {epochs: 1, augment: false}\nphase2: {epochs: 0}\nprecision: fp32\n")
    return tmp_path, cfg, cache


def run_gic(*args: str):
    return CliRunner().invoke(gic_main, [str(a) for a in args])


def run_tune(*args: str):
    return CliRunner().invoke(tune_main, [str(a) for a in args])


def assert_one_error(result, *needles: str, extra_lines_ok: bool = False) -> str:
    """Exit 2, exactly one `error:` line that contains every needle, no traceback."""
    out = result.output
    assert result.exit_code == 2, (result.exit_code, out, result.exception)
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    for needle in needles:
        assert str(needle) in errors[0], (needle, errors[0])
    if not extra_lines_ok:
        # besides the error, only progress ("decoded N/M images", "data: N train / ...") may be printed
        others = [line for line in out.splitlines()
                  if line.strip() and not line.startswith(("error:", "decoded ", "data: "))]
        assert not others, out
    return errors[0]


def assert_cache_clean(cache: Path) -> None:
    """No decoded cache and no temporary file: a failed load writes nothing there."""
    left = [p.name for p in cache.rglob("*")] if cache.exists() else []
    assert not left, left


# ------------------------------------------------------------------------------------ data: errors
def _missing_folder(d):
    return d / "nope", d / "nope", "no such data folder"


def _missing_split(d):
    import shutil

    shutil.rmtree(d / "validation")
    return d, d / "validation" / "men", "missing folder"


def _missing_class(d):
    import shutil

    shutil.rmtree(d / "train" / "women")
    return d, d / "train" / "women", "missing folder"


def _empty_class(d):
    for f in (d / "train" / "women").iterdir():
        f.unlink()
    (d / "train" / "women" / "notes.txt").write_text("not an image")
    return d, d / "train" / "women", "no images"


def _corrupt_jpeg(d):
    data = bytearray(jpeg_bytes())
    data[20:200] = os.urandom(180)  # header tables and first scan bytes overwritten
    f = d / "train" / "men" / "corrupt.jpg"
    f.write_bytes(b"\xff\xd8\xff\xe0" + bytes(data[4:40]) + b"\x00" * 50)
    return d, f, "not a readable image"


def _truncated_png(d):
    f = d / "validation" / "women" / "truncated.png"
    f.write_bytes(png_bytes()[: len(png_bytes()) // 2])
    return d, f, "not a readable image"


def _zero_byte(d):
    f = d / "test" / "men" / "empty.jpg"
    f.write_bytes(b"")
    return d, f, "empty file (0 bytes)"


def _text_as_jpg(d):
    f = d / "train" / "women" / "notes.jpg"
    f.write_text("these are my notes, not a photo\n")
    return d, f, "not a readable image"


def _symlink_loop(d):
    f = d / "train" / "men" / "loop.jpg"
    os.symlink(f.name, f)  # loop.jpg -> loop.jpg
    return d, f, "not a readable image"


def _huge_image(d):
    f = d / "train" / "men" / "huge.png"
    Image.new("1", (10000, 10000), 1).save(f, optimize=True)  # 100 Mpx, ~15 kB on disk
    assert f.stat().st_size < 1_000_000
    return d, f, "image too large to decode safely (10000x10000 px"


DATA_ERRORS = {"missing folder": _missing_folder, "missing split": _missing_split, "missing class": _missing_class,
               "empty class": _empty_class, "corrupt JPEG": _corrupt_jpeg, "truncated PNG": _truncated_png,
               "zero-byte file": _zero_byte, "text file named .jpg": _text_as_jpg,
               "symlink loop": _symlink_loop, "huge image": _huge_image}


@pytest.mark.parametrize("case", list(DATA_ERRORS))
def test_bad_data_stops_gic_train_with_one_line_and_writes_nothing(case, env):
    tmp, cfg, cache = env
    root, named, what = DATA_ERRORS[case](make_data(tmp / "data"))
    out = tmp / "run"
    result = run_gic("train", "--config", cfg, "--set", f"data.dir={root}", "--out", out)
    assert_one_error(result, named, what)
    assert not out.exists()  # no folder without metrics.json
    assert_cache_clean(cache)


def test_duplicates_across_splits_are_a_leakage_error_in_data_check(env):
    tmp, _, _ = env
    root = make_data(tmp / "data")
    (root / "test" / "women" / "copy.png").write_bytes((root / "train" / "men" / "men_0.png").read_bytes())
    result = run_gic("data", "check", root)
    line = assert_one_error(result, "same content in several splits (leakage)", root / "test" / "women" / "copy.png",
                            extra_lines_ok=True)
    assert str(root / "train" / "men" / "men_0.png") in line


# ------------------------------------------------------------------------------------ data: accepted
def _odd_images(root: Path) -> dict[str, Path]:
    """Valid images in every mode the loader converts, a 1x1 image and a folder symlink loop."""
    folder = root / "train" / "men"
    out = {
        "grayscale": folder / "gray.png", "RGBA": folder / "rgba.png", "CMYK": folder / "cmyk.jpg",
        "palette": folder / "palette.png", "16-bit": folder / "deep.png", "tiny": folder / "one.png",
    }
    _image(101).convert("L").save(out["grayscale"])
    rgba = _image(102).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(out["RGBA"])
    _image(103).convert("CMYK").save(out["CMYK"], format="JPEG")
    _image(104).convert("P", palette=Image.Palette.ADAPTIVE).save(out["palette"])
    deep = (np.random.default_rng(105).integers(0, 65536, (40, 40))).astype(np.uint16)
    Image.fromarray(deep).save(out["16-bit"])  # a 16-bit grayscale PNG
    _image(106, size=1).save(out["tiny"])
    os.symlink("..", folder / "loop")  # train/men/loop -> train: ignored by the loader, must not hang
    return out


def test_odd_images_are_accepted_converted_and_trained_on(env):
    tmp, cfg, cache = env
    root = make_data(tmp / "data")
    odd = _odd_images(root)
    check = run_gic("data", "check", root)
    assert check.exit_code == 0, check.output
    warnings = [line for line in check.output.splitlines() if line.startswith("warning:")]
    for kind, path in odd.items():
        expected = {"grayscale": "grayscale image, converted", "RGBA": "RGBA (alpha) image, converted",
                    "CMYK": "CMYK image, converted", "palette": "palette image, converted",
                    "16-bit": "16-bit grayscale image (0..65535 scaled to 0..255)", "tiny": "tiny image (1x1 px"}[kind]
        assert any(str(path) in w and expected in w for w in warnings), (kind, check.output)
    assert "error:" not in check.output and "Traceback" not in check.output

    out = tmp / "run"
    result = run_gic("train", "--config", cfg, "--set", f"data.dir={root}", "--out", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert "data: 12 train" in result.output  # 6 + 6 odd images, every one decoded
    assert len(list(cache.glob("dataset-*.npz"))) == 1 and not list(cache.glob("*.tmp"))


# ------------------------------------------------------------------------------------ config
@pytest.fixture
def search_file(env):
    """A complete, valid search file (dry run: nothing trains) and its path."""
    import yaml

    tmp, _, _ = env
    data = make_data(tmp / "data")
    raw = tiny_search(data, tmp / "results", name="bad", num_samples=2, debug={"dry_run": True})
    path = tmp / "search.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


TUNE_CONFIG_ERRORS = [
    (["trainer.phase2.unfreeze_layers=14"], "trainer.phase2.unfreeze_layers = 14"),
    (["space.model.dropout_rate.low=0.3", "space.model.dropout_rate.high=0.3"], "space.model.dropout_rate: empty or inverted range"),
    (["space.model.dropout_rate.low=0.5", "space.model.dropout_rate.high=0.2"], "space.model.dropout_rate: empty or inverted range"),
    (["search.num_samples=0"], "search.num_samples = 0"),
    (["search.resources_per_trial.gpu=1.5"], "search.resources_per_trial.gpu = 1.5: a GPU share above 1 must be a whole number"),
    (["search.resources_per_trial.gpu=-0.5"], "search.resources_per_trial.gpu = -0.5"),
]


@pytest.mark.parametrize("sets, message", TUNE_CONFIG_ERRORS, ids=[m.split(":")[0][:40] for _, m in TUNE_CONFIG_ERRORS])
def test_bad_search_settings_are_one_line_and_start_nothing(sets, message, search_file, env):
    tmp, _, cache = env
    args = [a for s in sets for a in ("--set", s)]
    result = run_tune("run", "--config", search_file, *args)
    assert_one_error(result, search_file, message)
    assert not (tmp / "results").exists()


def test_an_unknown_search_key_names_the_option_and_the_closest_key(search_file, env):
    tmp, _, _ = env
    result = run_tune("run", "--config", search_file, "--set", "search.max_concurent=2")
    assert_one_error(result, "--set search.max_concurent: unknown key; did you mean search.max_concurrent?")
    assert not (tmp / "results").exists()


def test_wrong_type_in_a_trainer_override(env):
    tmp, cfg, _ = env
    result = run_gic("train", "--config", cfg, "--set", "phase1.epochs=many", "--out", tmp / "run")
    assert_one_error(result, cfg, "phase1.epochs = 'many'")
    assert not (tmp / "run").exists()


def test_yaml_syntax_error_names_the_line(env):
    tmp, _, _ = env
    bad = tmp / "bad.yaml"
    bad.write_text("seed: 1\nmodel:\n  dropout_rate: [0.5\nphase1: {epochs: 1}\n")
    for result in (run_gic("train", "--config", bad, "--out", tmp / "run"), run_tune("run", "--config", bad)):
        assert_one_error(result, bad, "YAML syntax error at line")
    assert not (tmp / "run").exists()


def test_gpus_requested_where_the_local_ray_has_none(search_file, env):
    import shutil

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has a GPU")
    tmp, _, _ = env
    result = run_tune("run", "--config", search_file, "--set", "search.resources_per_trial.gpu=0.25")
    # extra lines: Ray's own start-up log (e.g. "Token authentication is enabled"), never a traceback
    assert_one_error(result, "search.resources_per_trial.gpu = 0.25 but the Ray cluster has 0 GPU(s)",
                     extra_lines_ok=True)
    assert not (tmp / "results").exists()  # nothing left behind, not even the storage root it made


# ------------------------------------------------------------------------------------ files
def test_weights_file_with_the_wrong_shapes(env):
    import keras

    tmp, cfg, cache = env
    wrong = tmp / "wrong.weights.h5"
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Conv2D(2, 3)])
    model.save_weights(wrong)
    root = make_data(tmp / "data")
    result = run_gic("train", "--config", cfg, "--set", f"data.dir={root}", "--set", f"model.weights={wrong}",
                     "--out", tmp / "run")
    assert_one_error(result, "model.weights:", wrong, "not a Keras VGG16 no-top weights file")
    assert not (tmp / "run").exists()


def test_model_file_that_is_not_a_model(env):
    tmp, _, _ = env
    junk = tmp / "junk.keras"
    junk.write_bytes(os.urandom(256))
    image = tmp / "a.png"
    _image(1).save(image)
    assert_one_error(run_gic("predict", junk, image), junk, "not a Keras model file")


def test_resume_or_warm_start_from_a_folder_that_is_not_an_experiment(search_file, env):
    tmp, _, _ = env
    (tmp / "results" / "bad").mkdir(parents=True)
    (tmp / "results" / "bad" / "notes.txt").write_text("mine")
    assert_one_error(run_tune("run", "--config", search_file, "--resume"), tmp / "results" / "bad",
                     "no experiment to resume")
    assert_one_error(run_tune("run", "--config", search_file, "--name", "other", "--warm-start", tmp / "results" / "bad"),
                     tmp / "results" / "bad", "not an experiment folder")
    assert sorted(p.name for p in (tmp / "results").iterdir()) == ["bad"]  # nothing new
    assert [p.name for p in (tmp / "results" / "bad").iterdir()] == ["notes.txt"]  # nothing touched


# ------------------------------------------------------------------------------------ environment
def test_missing_kaggle_credentials_when_train_must_download(env, monkeypatch):
    tmp, cfg, cache = env
    monkeypatch.setenv("HOME", str(tmp / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp / "home" / ".config"))
    for key in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(key, raising=False)
    data = tmp / "kaggle-data"
    result = run_gic("train", "--config", cfg, "--set", "data.source=kaggle", "--set", f"data.dir={data}",
                     "--out", tmp / "run")
    assert_one_error(result, "no Kaggle credentials", "KAGGLE_USERNAME and KAGGLE_KEY")
    assert not data.exists() and not (tmp / "kaggle-data-raw").exists() and not (tmp / "run").exists()


def test_results_folder_that_cannot_be_written(env, search_file):
    # Tests run as root, where chmod does not stop writes: a path under a regular file really fails.
    tmp, cfg, cache = env
    blocker = tmp / "a-file"
    blocker.write_text("")
    root = tmp / "data"  # made by search_file
    result = run_gic("train", "--config", cfg, "--set", f"data.dir={root}", "--out", blocker / "out")
    assert_one_error(result, blocker / "out", "not writable")
    result = run_tune("run", "--config", search_file, "--set", f"search.storage_path={blocker / 'results'}")
    assert_one_error(result, blocker / "results", "not writable")
    assert blocker.is_file() and not (tmp / "results").exists()
    assert_cache_clean(cache)  # refused before the data was decoded


def test_no_room_for_the_cache_is_found_before_decoding(env, monkeypatch):
    import shutil
    from collections import namedtuple

    import gic.data

    tmp, cfg, cache = env
    root = make_data(tmp / "data", per_class=40)  # 240 images at 160 px: 17.6 MiB decoded
    usage = namedtuple("usage", "total used free")
    decoded: list[Path] = []
    monkeypatch.setattr(gic.data.shutil, "disk_usage", lambda p: usage(2**40, 2**40 - 2**20, 2**20))
    monkeypatch.setattr(gic.data, "decode_image", lambda path, size: decoded.append(path))
    result = run_gic("train", "--config", cfg, "--set", f"data.dir={root}", "--set", "data.image_size=160",
                     "--out", tmp / "run")
    assert_one_error(result, cache, "no room for the data cache (240 images at 160 px need 17.6 MiB, 1.0 MiB free)")
    assert not decoded and not (tmp / "run").exists()
    assert_cache_clean(cache)
    assert shutil.disk_usage is not None


# ------------------------------------------------------------------------------------ command line
@pytest.mark.parametrize("runner, args, needles", [
    (run_tune, ["run", "--num-samples", "0"], [" run: ", "--num-samples", "0 is not in the range"]),
    (run_tune, ["trials", "--format", "xml"], ["--format", "'xml' is not one of"]),
    (run_gic, ["train"], [" train: ", "Missing option '--config'"]),
    (run_gic, ["data", "synth"], [" data synth: ", "--dest"]),
    (run_tune, ["frobnicate"], ["No such command 'frobnicate'"]),
], ids=["out-of-range", "bad-choice", "missing-option", "missing-required", "unknown-command"])
def test_bad_command_line_is_one_line_and_exit_2(runner, args, needles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner(*args)
    assert_one_error(result, *needles)
    assert not any(tmp_path.iterdir())  # nothing started, nothing written


# ------------------------------------------------------------------------------------ a real terminal
def _subprocess(module: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_no_traceback_reaches_the_terminal(env, search_file):
    tmp, cfg, _ = env
    root = make_data(tmp / "data2")
    _corrupt_jpeg(root)
    blocker = tmp / "a-file"
    blocker.write_text("")
    runs = [
        (_subprocess("gic.cli", "train", "--config", cfg, "--set", f"data.dir={root}", "--out", tmp / "run", cwd=tmp),
         "corrupt.jpg: not a readable image"),
        (_subprocess("gic.cli", "train", "--config", cfg, "--out", blocker / "out", cwd=tmp), "not writable"),
        (_subprocess("tune.cli", "run", "--config", search_file, "--set", "search.max_concurent=2", cwd=tmp),
         "--set search.max_concurent: unknown key; did you mean search.max_concurrent?"),
    ]
    for done, message in runs:
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr + done.stdout
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
        assert not done.stdout.strip()
    assert not (tmp / "run").exists()
