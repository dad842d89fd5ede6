"""README.md's commands run as printed, on a fresh copy of the repository.

Every `gic` / `gic-tune` command in README.md (code blocks, and inline ones with arguments) is listed in
PLAN with how it runs here: as printed, shortened (fewer epochs or trials, appended as `--set` or
smaller counts: the README's figures are measured elsewhere), or skipped with the reason (the Kaggle
download, a cluster). A README command missing from PLAN fails the fast test, so a new command gets a
decision; the slow test runs them in README order in a copy of the tracked files, the way a newcomer
would after `git clone`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOOLS = ("gic", "gic-tune")

# Shortened budgets, used consistently so that --resume sees the settings the run was started with.
# Click keeps the last value of an option given twice, so `--num-samples 2` appended shortens a command's own.
SEARCH_SHORT = ["--num-samples", "2", "--set", "trainer.phase1.epochs=2", "--set", "trainer.phase2.epochs=1"]
TRAIN_SHORT = ["--set", "phase1.epochs=1", "--set", "phase2.epochs=1"]
RETRAIN_SHORT = ["--set", "phase1.epochs=1", "--set", "phase2.epochs=1"]
SKIP_DATA = "needs the Kaggle data (network and credentials)"

# README command -> ("run", argv appended or replaced, expected exit code) | ("skip", reason).
PLAN: dict[str, tuple] = {
    "gic-tune run": ("run", SEARCH_SHORT, 0),
    "gic data download --dest data/menwomen-raw": ("skip", "downloads from Kaggle (network, credentials)"),
    "gic data prepare --raw data/menwomen-raw --dest data/menwomen": ("skip", SKIP_DATA),
    "gic data check data/menwomen": ("skip", SKIP_DATA),
    "gic data synth --dest data/synth --per-class 160 --size 64": ("run", [], 0),
    "gic train --config configs/demo-train.yaml": ("run", TRAIN_SHORT, 0),
    "gic train --config configs/baseline.yaml": ("skip", SKIP_DATA),
    "gic train --config configs/baseline.yaml --set phase2.unfreeze_layers=6 --set precision=auto":
        ("skip", SKIP_DATA),
    "gic train --config configs/demo-train.yaml --resume": ("run", TRAIN_SHORT, 0),
    "gic predict results/train/demo-train/model.keras photos/ photo1.jpg --out predictions.csv": ("run", [], 0),
    "gic-tune run --config configs/search.yaml --address auto": ("skip", "needs a Ray cluster and the Kaggle data"),
    "gic-tune run --config configs/demo.yaml --resume": ("run", SEARCH_SHORT, 0),
    "gic-tune run --num-samples 4 --set trainer.phase1.epochs=2 --set search.max_concurrent=1 --name quick":
        ("run", ["--num-samples", "1", "--set", "trainer.phase2.epochs=1"], 0),
    "gic-tune run --time-budget 30m": ("skip", "prose: the option, shown on the demo search above"),
    "gic-tune run --resume": ("skip", "prose: the option; run above as `--config configs/demo.yaml --resume`"),
    "gic-tune run --verbose": ("skip", "prose: the option; tests/test_cli_warnings.py runs it"),
    "gic-tune run --config configs/demo.yaml --name demo2 --warm-start results/demo":
        ("run", [*SEARCH_SHORT, "--num-samples", "1"], 0),
    "gic-tune trials": ("run", [], 0),
    "gic-tune trials results/demo": ("run", [], 0),
    "gic-tune trials results/demo --top 5": ("run", [], 0),
    "gic-tune trials results/demo --sort model.dropout_rate --status finished,stopped": ("run", [], 0),
    "gic-tune trials results/demo --format csv": ("run", [], 0),
    "gic-tune report results/demo": ("run", [], 0),
    "gic-tune retrain results/demo": ("run", RETRAIN_SHORT, 0),
    "gic-tune retrain results/demo --top 3 --seeds 3 --compare-baseline":
        ("run", [*RETRAIN_SHORT, "--top", "1", "--seeds", "2"], 0),
    "gic-tune retrain results/demo --train-on train+validation": ("run", RETRAIN_SHORT, 0),
    "gic-tune retrain results/demo --seeds 3 --address auto": ("skip", "needs a Ray cluster (--address auto)"),
    "gic-tune run --config configs/faces-dev.yaml": ("skip", "needs ../shared/data/faces-dev (and 36 min)"),
    "gic-tune retrain results/faces-dev --seeds 3 --compare-baseline --address local":
        ("skip", "needs the faces-dev search above"),
    "gic-tune trials results/faces-dev --top 6": ("skip", "needs the faces-dev search above"),
    "gic-tune run --config configs/faces-dev.yaml --name nostop --set search.early_stopping=false":
        ("skip", "needs ../shared/data/faces-dev (and about an hour)"),
    "gic-tune rungs results/nostop --scheme epoch:5:2 --scheme epoch:20:2 --scheme compute:1:3 --scheme compute:2:2":
        ("skip", "needs the no-stop faces-dev search above"),
    "gic bench train --data ../shared/data/faces-dev --size 128 --epochs 3":
        ("skip", "needs ../shared/data/faces-dev, which a fresh clone does not have"),
}


def readme_commands(text: str) -> list[str]:
    """The gic / gic-tune commands of a README, in order: from ```bash blocks and 4-space indented
    blocks (continuation lines joined, trailing `# comments` and `cmd && ` prefixes dropped), and
    inline `code` spans that hold a command with an option or a path but no placeholder (DIR, ...)."""
    lines, buf = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    found, fence = [], None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:] or "text")
            continue
        if fence == "bash" or (fence is None and line.startswith("    ") and stripped and stripped[0] not in "-|*"):
            command = re.split(r"\s#\s|\s{2,}#", stripped)[0]
            found += [" ".join(part.split()) for part in command.split("&&")
                      if part.split() and part.split()[0] in TOOLS]
        elif fence is None:
            for span in re.findall(r"`([^`]+)`", line):
                words = span.split()
                if (words[0] in TOOLS and any(w.startswith("-") or "/" in w for w in words[1:])
                        and "..." not in span and not any(w.isupper() and len(w) > 1 for w in words)):
                    found.append(" ".join(words))
    return list(dict.fromkeys(found))


def test_every_readme_command_has_a_plan():
    commands = readme_commands(README.read_text())
    assert "gic-tune run" in commands and "gic-tune report results/demo" in commands, commands  # the parser works
    unplanned = [c for c in commands if c not in PLAN]
    assert not unplanned, f"README commands with no entry in tests/test_readme.py PLAN: {unplanned}"
    stale = [c for c in PLAN if c not in commands]
    assert not stale, f"PLAN entries no longer in README.md: {stale}"


def _fresh_copy(dest: Path) -> Path:
    """The tracked files of the repository (what `git clone` gives), without results or caches."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def _user_photos(clone: Path) -> None:
    """What `gic predict ... photos/ photo1.jpg` stands for: a folder and a file of the user's photos."""
    images = sorted((clone / "data" / "synth-64" / "test").rglob("*.png"))
    assert images, "gic train on the demo should have generated data/synth-64"
    (clone / "photos" / "holiday").mkdir(parents=True)
    for image in images[:3]:
        shutil.copy(image, clone / "photos" / "holiday" / image.name)
    from PIL import Image
    Image.open(images[-1]).convert("RGB").save(clone / "photo1.jpg")


@pytest.mark.slow
def test_readme_commands_run_as_printed_on_a_fresh_clone(tmp_path):
    clone = _fresh_copy(tmp_path / "gic-tune")
    env = {**os.environ, "COLUMNS": "120", "PYTHONUNBUFFERED": "1"}
    bin_dir = Path(sys.executable).parent
    ran = []
    for command in readme_commands(README.read_text()):
        how = PLAN[command]
        if how[0] == "skip":
            continue
        _, extra, expected = how
        if command.startswith("gic predict"):
            _user_photos(clone)
        words = command.split()
        argv = [str(bin_dir / words[0]) if (bin_dir / words[0]).exists() else words[0], *words[1:], *extra]
        started = time.monotonic()
        done = subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
        out = done.stdout + done.stderr
        print(f"{time.monotonic() - started:6.1f} s  {command} {' '.join(extra)}")
        assert done.returncode == expected, f"{command} (+{extra}) exited {done.returncode}:\n{out[-3000:]}"
        assert "Traceback" not in out, f"{command}:\n{out[-3000:]}"
        ran.append(command)
    # What the commands promise, on the files they wrote.
    assert (clone / "results" / "demo" / "best_config.yaml").is_file()
    assert (clone / "results" / "demo" / "report" / "report.html").is_file()
    assert (clone / "predictions.csv").read_text().count("\n") == 5  # a header and 3 + 1 photos
    assert (clone / "results" / "demo2" / "warm_start.json").is_file()
    retrains = list((clone / "results" / "demo" / "retrain").glob("*/comparison.md"))
    assert len(retrains) == 3, retrains
    assert len(ran) == sum(how[0] == "run" for how in PLAN.values()), ran
