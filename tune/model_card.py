"""Model cards for the models `gic-tune retrain` leaves: what each model is, the data it was trained
and tested on, its test metrics and their spread over seeds, the search its configuration came
from, the versions that built it and the command that rebuilds it.

    <retrain folder>/<config>/seed<k>/MODEL_CARD.md, model_card.json    one per model
    <retrain folder>/MODEL_CARD.md, model_card.json                      all of them, per configuration

The JSON holds what the Markdown shows (and the full trainer config); both are written atomically
after every run of a retrain is complete, so they describe the folder as it is.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from gic.config import TrainConfig
from gic.files import atomic_write_json, atomic_write_text, versions

CARD_MD, CARD_JSON = "MODEL_CARD.md", "model_card.json"
SPREAD_METRICS = ("test_accuracy", "test_auc", "test_loss")


def shown_path(path: str | Path) -> str:
    """`path` relative to the current folder when it lies inside it (commands stay short), else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def data_summary(data, cfg: TrainConfig) -> dict[str, Any]:
    """The dataset's folder, image size, fingerprint and images per split and class."""
    splits = {}
    for name in ("train", "validation", "test"):
        labels = np.asarray(data.split(name).labels)
        splits[name] = {cls: int(np.sum(labels == i)) for i, cls in enumerate(data.class_names)}
    return {"folder": str(cfg.data.dir), "folder_resolved": str(Path(cfg.data.dir).expanduser().resolve()),
            "source": cfg.data.source, "image_size": int(data.image_size), "fingerprint": data.fingerprint,
            "images": splits}


def spread(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value) and the values themselves."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": None, "std": None, "values": list(values)}
    mean = sum(finite) / len(finite)
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else None
    return {"mean": mean, "std": std, "values": finite}


def search_origins(experiment: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """For each tuned configuration name (`best-<trial id>`, `top2-<trial id>`): the trial it was and
    how it did in the search. The baseline gets no entry."""
    from tune.trials import search_config, trial_table

    searched = search_config(experiment)
    frame = trial_table(experiment)
    rows = {str(r["trial_id"]): r for r in frame.to_dict("records")} if not frame.empty else {}
    out = {}
    for name in names:
        if name == "baseline":
            continue
        trial_id = name.split("-", 1)[1]
        row = rows.get(trial_id, {})
        best = row.get("best_val_accuracy")
        out[name] = {"experiment": str(experiment), "search_name": (searched.get("search") or {}).get("name"),
                     "search_command": searched.get("command"), "trial_id": trial_id,
                     "rank": 1 if name.startswith("best-") else int(name.split("-", 1)[0].removeprefix("top")),
                     "best_val_accuracy": None if best is None or (isinstance(best, float) and math.isnan(best))
                     else float(best),
                     "status": row.get("status_detail") or row.get("status")}
    return out


def rebuild_command(run_folder: Path, experiment: Path, name: str, seed: int) -> str:
    """`gic train` with the run's own config: the same data, settings and seed."""
    out = Path("results") / "train" / f"{experiment.name}-{name}-seed{seed}"
    return f"gic train --config {shown_path(run_folder / 'config.yaml')} --out {out}"


def run_card(folder: Path, metrics: dict[str, Any], seeds_of_config: list[dict[str, Any]], data: dict[str, Any],
             origin: dict[str, Any] | None, experiment: Path, baseline_path: str | Path | None,
             retrain_command: str) -> dict[str, Any]:
    """The card of one model as plain data (model_card.json)."""
    import yaml

    config = yaml.safe_load((folder / "config.yaml").read_text())
    built_with = folder / "versions.json"
    name, seed = metrics["name"], metrics["seed"]
    merged = metrics.get("train_on") == "train+validation"
    return {
        "model": {"file": "model.keras", "name": name, "seed": seed, "classes": ["men", "women"],
                  "input": f"{data['image_size']}x{data['image_size']} RGB, 0-255 (gic predict resizes any image)",
                  "output": "P(women); label women when >= 0.5"},
        "config": config,
        "training": {"train_on": metrics.get("train_on"), "epochs": metrics.get("epochs"),
                     "weights_kept": metrics.get("selected"), "train_images": metrics.get("train_images"),
                     "train_time_s": metrics.get("train_time_s"), "precision": metrics.get("precision")},
        "data": data,
        "test": {k: metrics.get(k) for k in (*SPREAD_METRICS, "confusion_matrix", "test_images")},
        "over_seeds": {"seeds": [m["seed"] for m in seeds_of_config],
                       **{k: spread([m.get(k) for m in seeds_of_config]) for k in SPREAD_METRICS}},
        "search": origin,
        "recipe": None if origin is not None else str(baseline_path) if baseline_path else None,
        "versions": json.loads(built_with.read_text()) if built_with.is_file() else versions(),
        "rebuild": None if merged else rebuild_command(folder, experiment, name, seed),
        "retrain_command": retrain_command,
        "written": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


# ---------------------------------------------------------------------------------- Markdown
def _num(value: Any, digits: int = 4) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _pm(s: dict[str, Any], digits: int = 4) -> str:
    if s["mean"] is None:
        return "-"
    return _num(s["mean"], digits) + ("" if s["std"] is None else f" ± {_num(s['std'], digits)}")


def _flat(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in config.items():
        if isinstance(value, dict):
            items += _flat(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _data_md(data: dict[str, Any], train_on: str | None) -> list[str]:
    resolved = "" if data["folder_resolved"] == data["folder"] else f", `{data['folder_resolved']}`"
    lines = [f"- folder: `{data['folder']}` ({data['source']}{resolved})",
             f"- images: {data['image_size']} px, fingerprint `{data['fingerprint']}`",
             f"- trained on: {train_on}" + (" (validation merged into training: no held-out validation)"
                                           if train_on == "train+validation" else ""), "",
             "| split | men | women | total |", "|---|---|---|---|"]
    for split, counts in data["images"].items():
        lines.append(f"| {split} | {counts.get('men', 0)} | {counts.get('women', 0)} | {sum(counts.values())} |")
    return lines


def _origin_md(origin: dict[str, Any] | None, recipe: str | None) -> list[str]:
    if origin is None:
        return [(f"The seed recipe (`{recipe}`), on the tuned configuration's data, image size, epoch budget, "
                 "weights and precision: the baseline the search is compared with, not one of its trials.")]
    lines = [f"- experiment: `{origin['experiment']}` (search `{origin['search_name']}`)",
             (f"- trial: `{origin['trial_id']}`, rank {origin['rank']} by best val accuracy, "
              f"{_num(origin['best_val_accuracy'])} in the search; {origin['status']}")]
    if origin.get("search_command"):
        lines.append(f"- the search: `{origin['search_command']}`")
    return lines


def _versions_md(found: dict[str, str]) -> list[str]:
    return ["| package | version |", "|---|---|", *(f"| {k} | {v} |" for k, v in found.items())]


def render_run_card(card: dict[str, Any]) -> str:
    """MODEL_CARD.md of one model."""
    model, test, seeds = card["model"], card["test"], card["over_seeds"]
    kept = card["training"]["weights_kept"] or {}
    where = (f"trial `{card['search']['trial_id']}` of the search in `{card['search']['experiment']}`"
             if card["search"] else "the seed recipe (the baseline)")
    lines = [f"# Model card: {model['name']}, seed {model['seed']}", "",
             ("`model.keras` in this folder: the VGG16 transfer-learning classifier of men and women photos, "
              f"trained from scratch by `gic-tune retrain` with the configuration of {where}."), "",
             f"- input: {model['input']}", f"- output: {model['output']}",
             (f"- weights kept: {kept.get('weights', '-')} (epoch {kept.get('epoch', '-')} of "
              f"{card['training']['epochs']}); trained in {_num(card['training']['train_time_s'], 1)} s, "
              f"{card['training']['precision']}"), "",
             "## Test metrics", "",
             (f"On the untouched test split ({test.get('test_images', '-')} images), and over the "
              f"{len(seeds['seeds'])} seed(s) {seeds['seeds']} of this configuration (mean ± sample std)."), "",
             f"| metric | this model | {model['name']} over seeds |", "|---|---|---|"]
    for key in SPREAD_METRICS:
        lines.append(f"| {key.replace('_', ' ')} | {_num(test.get(key))} | {_pm(seeds[key])} |")
    cm = test.get("confusion_matrix")
    if cm:
        lines += ["", "Confusion matrix (rows: true class, columns: predicted):", "",
                  "| | men | women |", "|---|---|---|", f"| men | {cm[0][0]} | {cm[0][1]} |",
                  f"| women | {cm[1][0]} | {cm[1][1]} |"]
    lines += ["", "## Data", "", *_data_md(card["data"], card["training"]["train_on"]),
              "", "## Configuration", "", "The full trainer config is `config.yaml` beside the model.", "",
              "| key | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in _flat(card["config"])),
              "", "## Where the configuration came from", "", *_origin_md(card["search"], card["recipe"]),
              "", "## Rebuild", ""]
    if card["rebuild"]:
        lines += ["The same config, data and seed with `gic train`:", "", "```", card["rebuild"], "```"]
    else:
        lines += ["Trained on train+validation, which `gic train` does not do: rerun the retrain below."]
    lines += ["", f"This retrain: `{card['retrain_command']}`", "",
              "## Versions", "", *_versions_md(card["versions"]), "", f"Written {card['written']}.", ""]
    return "\n".join(lines)


def summary_card(cards: list[dict[str, Any]], experiment: Path, folder: Path, retrain_command: str) -> dict[str, Any]:
    """The retrain folder's card: one entry per configuration, with its seeds' models."""
    configs: dict[str, dict[str, Any]] = {}
    for card in cards:
        name = card["model"]["name"]
        entry = configs.setdefault(name, {"name": name, "search": card["search"], "recipe": card["recipe"],
                                          "over_seeds": card["over_seeds"], "models": [], "rebuild": []})
        entry["models"].append(shown_path(folder / name / f"seed{card['model']['seed']}" / "model.keras"))
        if card["rebuild"]:
            entry["rebuild"].append(card["rebuild"])
    first = cards[0]
    return {"experiment": str(experiment), "folder": str(folder), "train_on": first["training"]["train_on"],
            "epochs": first["training"]["epochs"], "configurations": list(configs.values()), "data": first["data"],
            "versions": first["versions"], "retrain_command": retrain_command,
            "written": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def render_summary_card(card: dict[str, Any]) -> str:
    """The retrain folder's MODEL_CARD.md."""
    experiment = Path(card["experiment"])
    lines = [f"# Model card: retrain of {experiment.name}", "",
             (f"{len(card['configurations'])} configuration(s), each trained from scratch on `{card['train_on']}` "
              f"for {card['epochs']} epochs per seed, and measured once on the untouched test split. Each model's "
              "own card is `MODEL_CARD.md` in its folder."), "",
             "| configuration | trial | best val accuracy in the search | seeds | test accuracy | test AUC | models |",
             "|---|---|---|---|---|---|---|"]
    for c in card["configurations"]:
        origin = c["search"]
        trial = f"`{origin['trial_id']}`" if origin else "seed recipe"
        best = _num(origin["best_val_accuracy"]) if origin else "-"
        models = "<br>".join(f"`{m}`" for m in c["models"])
        lines.append(f"| {c['name']} | {trial} | {best} | {c['over_seeds']['seeds']} | "
                     f"{_pm(c['over_seeds']['test_accuracy'])} | {_pm(c['over_seeds']['test_auc'])} | {models} |")
    tuned = next((c["search"] for c in card["configurations"] if c["search"]), None)
    lines += ["", "Test metrics: mean ± sample standard deviation over seeds.", "",
              "## Data", "", *_data_md(card["data"], card["train_on"]), "",
              "## Where the configurations came from", "",
              *(_origin_md(tuned, None) if tuned else ["No tuned configuration."]), "",
              "## Rebuild", "", f"This retrain: `{card['retrain_command']}`", ""]
    rebuilds = [cmd for c in card["configurations"] for cmd in c["rebuild"]]
    if rebuilds:
        lines += ["One model with `gic train` (the same config, data and seed):", "", "```", *rebuilds, "```", ""]
    lines += ["## Versions", "", *_versions_md(card["versions"]), "", f"Written {card['written']}.", ""]
    return "\n".join(lines)


def write_model_cards(folder: Path, results: list[dict[str, Any]], data: dict[str, Any], experiment: Path,
                      baseline_path: str | Path | None, retrain_command: str) -> list[Path]:
    """MODEL_CARD.md and model_card.json beside every model of `results`, and the summary at the top.

    Args:
        folder: the retrain's output folder.
        results: every run's metrics (`run_all`), complete runs only.
        data: `data_summary` of the dataset the runs used.
        experiment: the search's experiment folder.
        baseline_path: the seed-recipe config (named in the baseline's card).
        retrain_command: the command line of this retrain.

    Returns:
        The Markdown cards written, the summary last.
    """
    origins = search_origins(experiment, sorted({m["name"] for m in results}))
    written, cards = [], []
    for metrics in results:
        run_folder = folder / metrics["name"] / f"seed{metrics['seed']}"
        same = [m for m in results if m["name"] == metrics["name"]]
        card = run_card(run_folder, metrics, same, data, origins.get(metrics["name"]), experiment, baseline_path,
                        retrain_command)
        atomic_write_json(run_folder / CARD_JSON, card)
        written.append(atomic_write_text(run_folder / CARD_MD, render_run_card(card)))
        cards.append(card)
    summary = summary_card(cards, experiment, folder, retrain_command)
    atomic_write_json(folder / CARD_JSON, summary)
    written.append(atomic_write_text(folder / CARD_MD, render_summary_card(summary)))
    return written
