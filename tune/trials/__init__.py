"""Read and show an experiment folder as it is on disk: no Ray needed, during a search or after it.

    frame = trial_table("results/demo")                      # one row per trial
    frame = select(frame, sort="best", top=5, status=["finished"])
    print(render(frame, "table"))
    curves = trial_curves("results/demo")                    # {trial_id: DataFrame of epochs}
    print(experiments_table(list_experiments("results")))    # one line per experiment

One room per job: `read` (the folder -> the trial table, curves, settings, rungs), `selection`
(filter and sort), `view` (the table as text, for a terminal or a file), `listing` (the
experiments under a folder). The names below are the package's interface.
"""

from tune.results import round_metrics
from tune.trials.listing import experiments_table, list_experiments
from tune.trials.read import (asha_rungs, experiment_started, is_experiment, max_t, phase_epochs, require_experiment,
                              rung_budget, search_config, trial_curves, trial_table)
from tune.trials.selection import STATUSES, param_columns, select, sort_column
from tune.trials.view import FORMATS, human_table, param_name, render, terminal_width, text_columns, trial_view

__all__ = ["FORMATS", "STATUSES", "asha_rungs", "experiment_started", "experiments_table", "human_table",
           "is_experiment", "list_experiments", "max_t", "param_columns", "param_name", "phase_epochs", "render",
           "require_experiment", "round_metrics", "rung_budget", "search_config", "select", "sort_column",
           "terminal_width", "text_columns", "trial_curves", "trial_table", "trial_view"]
