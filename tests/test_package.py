"""The package installs as a package: configs ship inside the wheel, and a user's file always wins.

Two parts:
- the resolution rule (`gic.shipped`), in-process and fast: an existing `--config` path is the user's
  file; a missing one that names a shipped config falls back to it with one `note:` line; anything
  else is the usual one-line error; `gic-tune init` copies the shipped configs and refuses to
  overwrite;
- the wheel: built from a copy of the source (or the one CI built with the setuptools floor:
  $GIC_TEST_WHEEL), checked to hold every package and config, installed with --no-deps into a venv
  that borrows this interpreter's site-packages for TensorFlow and Ray, then driven from folders
  outside the clone: `gic-tune init`, `gic train` on the user's copy and on the shipped file, and
  `gic-tune run` on the shipped default.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gic.cli import main as gic_main
from gic.shipped import copy_shipped, resolve_config, shipped_config, shipped_dir, shipped_names
from tune.cli import main as tune_main

ROOT = Path(__file__).resolve().parents[1]
REPO_CONFIGS = sorted(p.relative_to(ROOT / "configs").as_posix() for pattern in ("*.yaml", "cluster/*.yaml", "*.sh")
                      for p in (ROOT / "configs").glob(pattern))
# A tiny, fast trainer run: 8 generated 32 px images per split and class, random weights, one epoch.
TINY = {"data.dir": "data/tiny", "data.synthetic.per_class": 4, "data.synthetic.size": 32, "data.image_size": 32,
        "phase1.epochs": 1, "phase2.epochs": 0, "model.weights": "none"}


def _sets(prefix: str = "") -> list[str]:
    return [arg for key, value in TINY.items() for arg in ("--set", f"{prefix}{key}={value}")]


# ------------------------------------------------------------------------------- resolution rule
def test_every_config_of_the_repository_is_shipped():
    assert shipped_names() == REPO_CONFIGS
    assert {"demo.yaml", "demo-train.yaml", "baseline.yaml", "search.yaml", "cluster/aws-gpu.yaml"} <= set(REPO_CONFIGS)


@pytest.mark.parametrize("name, rel", [
    ("demo.yaml", "demo.yaml"),
    ("configs/demo.yaml", "demo.yaml"),
    ("./configs/search.yaml", "search.yaml"),
    ("cluster/aws-gpu.yaml", "cluster/aws-gpu.yaml"),
    ("configs/cluster/aws-gpu.yaml", "cluster/aws-gpu.yaml"),
])
def test_a_missing_path_that_names_a_shipped_config_falls_back_with_a_note(tmp_path, monkeypatch, name, rel):
    monkeypatch.chdir(tmp_path)
    notes: list[str] = []
    assert resolve_config(name, echo=notes.append) == shipped_dir() / rel
    assert len(notes) == 1 and notes[0].startswith(f"note: {Path(name)} is not in ") and "gic-tune init" in notes[0]


@pytest.mark.parametrize("name", ["configs/missing.yaml", "missing.yaml", "../configs/demo.yaml", "/nowhere/demo.yaml",
                                  "configs/__init__.py"])
def test_a_path_that_names_nothing_shipped_is_returned_as_given(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    notes: list[str] = []
    assert resolve_config(name, echo=notes.append) == Path(name) and not notes
    assert shipped_config(name) is None


def test_the_users_existing_file_always_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo-train.yaml").write_text("phase1: {epochs: 1}\n")
    (tmp_path / "demo.yaml").write_text("search: {name: mine}\n")
    notes: list[str] = []
    for name in ("configs/demo-train.yaml", "./configs/demo-train.yaml", "demo.yaml"):
        assert resolve_config(name, echo=notes.append) == Path(name)
    assert not notes


def test_the_shipped_search_file_reads_its_base_beside_it(tmp_path, monkeypatch):
    from tune.config import load_search_config

    monkeypatch.chdir(tmp_path)  # no configs/ here
    spec = load_search_config(resolve_config("configs/search.yaml", echo=None))
    baseline = yaml.safe_load((shipped_dir() / "baseline.yaml").read_text())
    assert spec.trainer.data.source == baseline["data"]["source"] and spec.search.num_samples == 64


def test_gic_train_reads_the_users_file_else_the_shipped_one(tmp_path, monkeypatch):
    """A bad value stops `gic train` before any training: the error names the file that was read."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(gic_main, ["train", "--config", "configs/demo-train.yaml", "--set", "phase1.epochs=-1"])
    assert result.exit_code == 2
    assert f"note: configs/demo-train.yaml is not in {tmp_path}; using the shipped" in result.output
    assert f"error: {shipped_dir() / 'demo-train.yaml'}: phase1.epochs = -1" in result.output

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo-train.yaml").write_text("phase2: {epochs: -3}\n")
    result = CliRunner().invoke(gic_main, ["train", "--config", "configs/demo-train.yaml"])
    assert result.exit_code == 2 and "note:" not in result.output
    assert result.output.strip() == "error: configs/demo-train.yaml: phase2.epochs = -3: Input should be greater than or equal to 0"

    result = CliRunner().invoke(gic_main, ["train", "--config", "configs/nope.yaml"])
    assert result.exit_code == 2 and result.output.strip() == "error: configs/nope.yaml: no such config file"


def test_gic_tune_run_defaults_to_the_local_demo_else_the_shipped_one(tmp_path, monkeypatch):
    """No --config: ./configs/demo.yaml when the folder has one, else the shipped demo.yaml, quietly."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(tune_main, ["run", "--set", "search.num_samples=0"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: {shipped_dir() / 'demo.yaml'}: search.num_samples = 0: Input should be greater than or equal to 1"]

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "demo.yaml").write_text("search: {name: 'not a name'}\n")
    result = CliRunner().invoke(tune_main, ["run"])
    assert result.exit_code == 2 and result.output.strip().startswith("error: configs/demo.yaml: search.name")


def test_init_copies_the_shipped_configs_and_never_overwrites_unasked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(tune_main, ["init"])
    assert result.exit_code == 0, result.output
    for name in REPO_CONFIGS:
        assert (tmp_path / "configs" / name).read_bytes() == (ROOT / "configs" / name).read_bytes()
    assert not (tmp_path / "configs" / "__init__.py").exists()

    (tmp_path / "configs" / "demo.yaml").write_text("# mine\n")
    result = CliRunner().invoke(tune_main, ["init"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: configs/baseline.yaml, configs/cluster/aws-gpu.yaml,")
    assert "configs/demo.yaml" in lines[0] and lines[0].endswith("pass --overwrite to replace them with the shipped ones")
    assert (tmp_path / "configs" / "demo.yaml").read_text() == "# mine\n"

    result = CliRunner().invoke(tune_main, ["init", "--overwrite"])
    assert result.exit_code == 0 and (tmp_path / "configs" / "demo.yaml").read_bytes() == (ROOT / "configs" / "demo.yaml").read_bytes()

    result = CliRunner().invoke(tune_main, ["init", "elsewhere/mine"])
    assert result.exit_code == 0 and (tmp_path / "elsewhere" / "mine" / "cluster" / "aws-gpu.yaml").is_file()
    assert "gic-tune init" in CliRunner().invoke(tune_main, ["init", "--help"]).output  # --help shows an example


def test_init_into_the_shipped_folder_itself_copies_nothing():
    """An editable install's shipped folder is the clone's configs/: nothing to copy, nothing refused."""
    copied, same = copy_shipped(shipped_dir())
    assert copied == [] and same == shipped_names()


# -------------------------------------------------------------------------------------- the wheel
def _source_packages() -> list[str]:
    return sorted(str(p.parent.relative_to(ROOT)).replace(os.sep, ".") for top in ("gic", "tune")
                  for p in (ROOT / top).rglob("__init__.py") if "__pycache__" not in p.parts)


def _setuptools_floor() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'requires\s*=\s*\["setuptools>=([0-9.]+)"', text)
    assert match, "pyproject.toml: [build-system] requires no setuptools>=X"
    return match.group(1)


def _build_wheel(tmp: Path) -> Path:
    """$GIC_TEST_WHEEL (CI builds it with the setuptools floor), else a wheel built from a copy of the source."""
    if os.environ.get("GIC_TEST_WHEEL"):
        return Path(os.environ["GIC_TEST_WHEEL"])
    src = tmp / "src"  # a copy: no build/ or egg-info left in the clone, no stale build/lib reused
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("gic", "tune", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    from importlib.metadata import version

    have = tuple(int(x) for x in re.findall(r"\d+", version("setuptools"))[:3])
    floor = tuple(int(x) for x in _setuptools_floor().split("."))
    # With a setuptools below the floor here, pip builds in an isolated env with one that satisfies it.
    isolation = ["--no-build-isolation"] if have >= floor else []
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
                           "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return next((tmp / "dist").glob("gic_tune-*.whl"))


def _venv_with(wheel: Path, tmp: Path) -> Path:
    """A venv holding only the wheel; TensorFlow, Ray and the rest come from this interpreter's site-packages."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # An editable install of the clone in the borrowed site-packages would otherwise answer imports the
    # wheel cannot (a subpackage missing from the wheel): drop its import hook in the venv.
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n")
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                           "--ignore-installed", str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_another_folder(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in REPO_CONFIGS:
        assert f"gic/configs/{name}" in names, f"{wheel.name} lacks configs/{name}"
    for package in _source_packages():
        assert f"{package.replace('.', '/')}/__init__.py" in names, \
            f"{wheel.name} lacks the package {package}: add it to [tool.setuptools] packages in pyproject.toml"

    venv = _venv_with(wheel, tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow", PYTHONNOUSERSITE="1")

    def run(*args, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
        cwd.mkdir(parents=True, exist_ok=True)
        return subprocess.run([str(venv / "bin" / args[0]), *map(str, args[1:])], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)

    where = run("python", "-c", "import gic, tune.cli, gic.configs, gic.shipped as s; print(gic.__file__);"
                " print(tune.cli.__file__); print(s.shipped_dir())", cwd=tmp_path / "user")
    assert where.returncode == 0, where.stderr
    assert all(Path(line).is_relative_to(venv) for line in where.stdout.split()), where.stdout  # not the clone

    # gic-tune init: the shipped configs, byte for byte; a second init refuses in one line.
    user = tmp_path / "user"
    done = run("gic-tune", "init", cwd=user)
    assert done.returncode == 0, done.stderr
    for name in REPO_CONFIGS:
        assert (user / "configs" / name).read_bytes() == (ROOT / "configs" / name).read_bytes()
    again = run("gic-tune", "init", cwd=user)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and again.stderr.startswith("error: configs/")

    # The user's ./configs/demo-train.yaml, edited, is what `gic train --config configs/demo-train.yaml` reads.
    mine = yaml.safe_load((user / "configs" / "demo-train.yaml").read_text())
    mine["model"]["dense_units"] = 7
    (user / "configs" / "demo-train.yaml").write_text(yaml.safe_dump(mine))
    done = run("gic", "train", "--config", "configs/demo-train.yaml", *_sets(), "--threads", "1", cwd=user)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "note:" not in done.stderr
    assert yaml.safe_load((user / "results/train/demo-train/config.yaml").read_text())["model"]["dense_units"] == 7

    # From a folder with no configs/: the shipped demo-train.yaml, said in one note.
    other = tmp_path / "other"
    done = run("gic", "train", "--config", "demo-train.yaml", *_sets(), "--threads", "1", cwd=other)
    assert done.returncode == 0, done.stdout + done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and str(venv) in notes[0] and "demo-train.yaml" in notes[0], done.stderr
    trained = yaml.safe_load((other / "results/train/demo-train/config.yaml").read_text())
    assert trained["model"]["dense_units"] == 256 and trained["model"]["dropout_rate"] == 0.3  # the shipped file's
    assert (other / "results/train/demo-train/model.keras").is_file()

    # gic-tune run with no --config: the shipped demo.yaml (trials without training: dry_run).
    done = run("gic-tune", "run", "--num-samples", "2", "--set", "search.debug.dry_run=true",
               "--set", "search.max_concurrent=1", "--set", "search.grace_period=1", *_sets("trainer."),
               cwd=other, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (other / "results" / "demo" / "trials.csv").is_file() and "done in" in done.stdout

    # A shipped search file's `base: baseline.yaml` is read beside it (the error comes after the base loaded).
    done = run("gic-tune", "run", "--config", "configs/search.yaml", "--set", "search.num_samples=0", cwd=other)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {venv}") and "search.num_samples = 0" in done.stderr
