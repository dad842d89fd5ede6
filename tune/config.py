"""The search file: trainer config + search space + search settings, validated in one go.

    base: baseline.yaml        # optional: a trainer YAML, relative to this file
    trainer: {...}             # trainer keys on top of `base` (or of the defaults)
    space: {...}               # see tune.space
    search:
      name: demo
      num_samples: 8
      max_concurrent: 2
      ...

`--set` overrides address the same tree: `search.num_samples=4`, `trainer.phase1.epochs=1`,
`space.model.dropout_rate.high=0.3`. Unknown keys are refused, and every error is one line that names
the key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gic.config import (TrainConfig, closest_key, config_keys, format_validation_error, parse_overrides,
                        read_yaml, set_dotted, unknown_key_message)
from gic.errors import ConfigError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tune.space import DIMENSION_KEYS, STRENGTH_KEY, SearchSpace, parse_space

# The one objective: the best validation accuracy a trial has reached so far (the trainer keeps those
# weights, so it is what the trial would deliver). Optuna learns it, ASHA compares it at a rung, and
# the trial table, best_config.yaml and retrain rank by it.
METRIC, MODE = "best_val_accuracy", "max"
# What ASHA's rungs are placed on (`search.budget`): the compute a trial has used (gic.cost, in base
# forward passes over the training split), or its global epoch.
TIME_ATTR = {"compute": "compute", "epoch": "training_iteration"}
TOP_LEVEL_KEYS = ("base", "trainer", "space", "search")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Resources(_Strict):
    """What one trial holds: CPUs and a (fractional) GPU share."""

    cpu: float = Field(1.0, gt=0, description="CPUs per trial; also its TensorFlow thread count")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial: 0.25 packs four trials on one GPU")
    # Each process pays for its own CUDA context and allocator slack outside TF's memory limit.
    gpu_memory_margin_mb: int = Field(768, ge=0, description="subtracted from each trial's GPU share")

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError("a GPU share above 1 must be a whole number of GPUs (Ray cannot split 1.5 GPUs)")
        return value


class DebugSettings(_Strict):
    """A training-free mode for exercising the search machinery (gic-tune bench); off by default."""

    # NOT A REAL SEARCH: trials skip TensorFlow and report synthetic per-epoch metrics (a smooth
    # function of the hyperparameters), checkpointing and resuming like real trials. Only for
    # exercising the search machinery (load, faults, interrupts) in seconds.
    dry_run: bool = False
    dry_run_epoch_s: float = Field(0.0, ge=0.0, description="seconds each dry-run epoch sleeps")


class SearchSettings(_Strict):
    """The `search:` section: trial count, concurrency, TPE, ASHA (budget, grace, rf), resources, storage."""
    name: str = "search"
    num_samples: int = Field(16, ge=1, description="trials in total")
    max_concurrent: int = Field(2, ge=1, description="trials running at once")
    n_startup_trials: int = Field(8, ge=0, description="random trials before TPE models the results")
    seed: int = 0
    # Measured (README, "Rungs where they pay", ASHA replayed on searches run to the end): compute rungs
    # at grace 2, rf 2 kept the best trial at about half the epoch time; they suit a search whose phase
    # 1 never augments (configs/faces-dev.yaml). Epoch stays the default.
    budget: Literal["compute", "epoch"] = Field(
        "epoch", description="what ASHA's rungs measure: epochs, or compute used (base forward passes over the "
                             "training split, gic.cost)")
    grace_period: float = Field(1.0, gt=0, description="budget (compute units or epochs) before ASHA may stop a trial")
    progress_every_s: float = Field(30.0, ge=0, description="seconds between status blocks (0: only events)")
    time_budget_s: float | None = Field(None, gt=0, description="no trial starts after this many seconds, and "
                                                                "running ones stop (gic-tune run --time-budget)")
    early_stopping: bool = Field(True, description="false: no ASHA, every trial runs to the end (to measure how "
                                                   "well rungs would predict: gic-tune rungs)")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA keeps 1/reduction_factor per rung")
    resources_per_trial: Resources = Resources()
    max_failures: int = Field(2, ge=0, description="retries of a crashed trial, each from its last checkpoint")
    checkpoint_every: int = Field(1, ge=1, description="epochs between checkpoints (the last epoch always saves)")
    storage_path: str = Field("results", min_length=1, description="local folder, shared filesystem or cloud URI")
    # A local storage_path on a cluster of several nodes is refused before any trial starts (the
    # other nodes cannot write their checkpoints there), unless it is a shared filesystem (NFS, EFS,
    # Lustre) mounted at the same path on every node: say so here.
    shared_filesystem: bool = False
    # A trial's checkpoints serve its retries and --resume; once it has ended nothing reads them
    # (retrain trains from scratch), so they are deleted then. True keeps them.
    keep_checkpoints: bool = False
    reuse_actors: bool = True  # warm workers: TF imported and base weights cached once per worker
    address: str | None = None  # None: a local Ray; `auto` or host:port: join a cluster
    debug: DebugSettings = DebugSettings()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", value):
            raise ValueError("expected letters, digits, '_', '-' or '.', starting with a letter or digit")
        return value


@dataclass(frozen=True)
class SearchSpec:
    """A validated search file."""

    trainer: TrainConfig  # base trainer config with the space's fixed values applied
    space: SearchSpace
    search: SearchSettings
    source: str

    def _most(self, name: str) -> Any:
        """The largest value dimension `name` can take (its fixed trainer value when not searched)."""
        dim = self.space.dimensions.get(name)
        if dim is None:
            node: Any = self.trainer.to_dict()
            for part in name.split("."):
                node = node[part]
            return node
        return max(dim.choices) if dim.kind == "categorical" else dim.high

    @property
    def max_epochs(self) -> int:
        """The longest a trial can run in epochs: E1 + E2 (E1 if no trial fine-tunes)."""
        e1, e2 = self.trainer.phase1.epochs, self.trainer.phase2.epochs
        return e1 + (e2 if e2 > 0 and self._most("phase2.unfreeze_layers") > 0 else 0)

    @property
    def max_t(self) -> float:
        """ASHA's max_t in `search.budget` units: the most any trial of the space can use."""
        if self.search.budget == "epoch":
            return self.max_epochs
        from gic.cost import unfrozen_share

        aug = self.space.dimensions.get("model.augmentation")
        may_augment = bool(self._most("phase1.augment")) and (
            any(c != "none" for c in aug.choices) if aug is not None else self.trainer.model.augmentation.enabled)
        e1, e2 = self.trainer.phase1.epochs, self.max_epochs - self.trainer.phase1.epochs
        p2 = 1.0 + 2.0 * unfrozen_share(self.trainer.data.image_size, int(self._most("phase2.unfreeze_layers")))
        return round(e1 * (1.0 if may_augment else 0.0) + e2 * p2, 6)

    @property
    def time_attr(self) -> str:
        """The result key ASHA reads as time (TIME_ATTR)."""
        return TIME_ATTR[self.search.budget]


def gpu_memory_cap_mb(gpu_fraction: float, gpu_total_mb: int | None, margin_mb: int = 768) -> int | None:
    """The TensorFlow memory cap of a trial that holds `gpu_fraction` of a GPU.

    A trial with a whole GPU (or more, or none) gets no cap: memory growth is enough. A trial with a
    fraction gets that share of the GPU minus a margin for its own CUDA context, which TensorFlow's
    limit does not count: 0.25 of an 81920 MB GPU with a 768 MB margin is 19712 MB.

    Raises:
        ConfigError: when the share is smaller than the margin plus 256 MB of working memory.
    """
    if gpu_fraction <= 0 or gpu_fraction >= 1 or not gpu_total_mb:
        return None
    share = math.floor(gpu_fraction * gpu_total_mb)
    cap = share - margin_mb
    if cap < 256:
        raise ConfigError(f"search.resources_per_trial.gpu = {gpu_fraction}: {share} MB of a {gpu_total_mb} MB GPU "
                          f"leaves {cap} MB after the {margin_mb} MB margin; give each trial a larger share")
    return cap


def trials_per_gpu(gpu_fraction: float) -> int:
    """How many trials Ray packs on one GPU at this share (0 for CPU-only trials)."""
    if gpu_fraction <= 0:
        return 0
    if gpu_fraction >= 1:
        return 1
    return math.floor(1 / gpu_fraction + 1e-9)


def cpu_threads(cpu: float) -> int:
    """TensorFlow intra-op threads for a trial holding `cpu` CPUs: its share, at least one."""
    return max(1, math.floor(cpu + 1e-9))


def search_file_keys() -> list[str]:
    """Every dotted key a search file (and `--set`) may name: `base`, `trainer.<trainer key>`,
    `search.<setting>`, and `space.<trainer key or augmentation_strength>`, optionally followed by a
    dimension key (`space.model.dropout_rate.high`)."""
    trainer = config_keys()
    dimensions = [*trainer, STRENGTH_KEY]
    return [*TOP_LEVEL_KEYS, *(f"trainer.{k}" for k in trainer),
            *(f"search.{k}" for k in config_keys(SearchSettings().model_dump(mode="json"))),
            *(f"space.{k}" for k in dimensions),
            *(f"space.{k}.{d}" for k in dimensions for d in sorted(DIMENSION_KEYS))]


def _check_set_key(key: str, known: list[str]) -> None:
    """Refuse a `--set` key that the search file has no place for, with the closest valid key."""
    if key in known:
        return
    top = key.split(".", 1)[0]
    if top not in TOP_LEVEL_KEYS:  # a trainer key without its section (`phase1.epoch`): most likely trainer.*
        trainer_keys = [k for k in known if k.startswith("trainer.")]
        hint = closest_key(f"trainer.{key}", trainer_keys)
        if hint is not None:
            raise ConfigError(f"--set {key}: unknown key; did you mean {hint}?")
    section = [k for k in known if k.startswith(f"{top}.")] if top in TOP_LEVEL_KEYS else known
    raise ConfigError(unknown_key_message(key, section or known))


def _space_names(raw: dict[str, Any], prefix: str = ""):
    """The dotted names of a raw space's entries (a mapping with dimension keys is one entry)."""
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not set(value) & DIMENSION_KEYS:
            yield from _space_names(value, f"{name}.")
        else:
            yield name


def _check_space_names(space: Any, path: Path) -> None:
    """Refuse a space entry that names no trainer key, with the closest valid one."""
    if not isinstance(space, dict):
        return  # parse_space says what a space must be
    valid = [*config_keys(), STRENGTH_KEY]
    for name in _space_names(space):
        if name not in valid:
            raise ConfigError(unknown_key_message(f"space.{name}", [f"space.{k}" for k in valid], str(path)))


def _apply_overrides(raw: dict[str, Any], overrides: list[str]) -> None:
    known = search_file_keys()
    for key, value in parse_overrides(overrides).items():
        _check_set_key(key, known)
        top = key.split(".", 1)[0]
        if top == "base":
            raw["base"] = value
            continue
        if not isinstance(raw.get(top), dict):
            raw[top] = {}
        # `space.model.dropout_rate=0.3` fixes a dimension; `space.model.dropout_rate.high=0.3` edits it.
        set_dotted(raw, key, value)


def load_search_config(path: str | Path, overrides: list[str] | None = None) -> SearchSpec:
    """Read and validate a search file (`base` + `trainer` + `space` + `search`) plus `--set` overrides.

    Raises:
        ConfigError: one line naming the file (or the `--set` key) and the key; an unknown key comes
            with the closest valid one (`did you mean search.max_concurrent?`).
    """
    path = Path(path)
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with {', '.join(TOP_LEVEL_KEYS)}, got {type(raw).__name__}")
    _apply_overrides(raw, overrides or [])
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(unknown_key_message(str(unknown[0]), TOP_LEVEL_KEYS, str(path)))

    trainer_raw: dict[str, Any] = {}
    base_path = None
    if raw.get("base") is not None:
        if not isinstance(raw["base"], str):
            raise ConfigError(f"{path}: base = {raw['base']!r}: expected the path of a trainer YAML")
        base_path = (path.parent / raw["base"]).resolve()
        loaded = read_yaml(base_path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{base_path}: expected a mapping of trainer keys")
        trainer_raw = loaded or {}
    trainer_over = raw.get("trainer") or {}
    if not isinstance(trainer_over, dict):
        raise ConfigError(f"{path}: trainer: expected a mapping of trainer keys")
    own = [key for key, _ in _flat_items(trainer_over)]
    for key, value in _flat_items(trainer_over):
        set_dotted(trainer_raw, key, value)
    try:
        trainer = TrainConfig.model_validate(trainer_raw)
    except ValidationError as err:
        # A key the search file does not set came from its base file: name that file.
        loc = ".".join(str(p) for p in err.errors()[0]["loc"])
        ours = base_path is None or any(loc == k or loc.startswith(f"{k}.") or k.startswith(f"{loc}.") for k in own)
        line = format_validation_error(err, str(path), prefix="trainer") if ours else \
            format_validation_error(err, str(base_path))
        raise ConfigError(line) from None

    search_raw = raw.get("search") or {}
    if not isinstance(search_raw, dict):
        raise ConfigError(f"{path}: search: expected a mapping")
    try:
        search = SearchSettings.model_validate(search_raw)
    except ValidationError as err:
        known = config_keys(SearchSettings().model_dump(mode="json"))
        raise ConfigError(format_validation_error(err, str(path), known=known, prefix="search")) from None

    _check_space_names(raw.get("space"), path)
    try:
        space = parse_space(raw.get("space"), trainer)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if space.fixed:
        from tune.space import apply_params

        trainer = apply_params(trainer, space.fixed)
    spec = SearchSpec(trainer=trainer, space=space, search=search, source=str(path))
    if spec.max_epochs < 1:
        raise ConfigError(f"{path}: trainer.phase1.epochs + phase2.epochs = 0: nothing to train")
    if search.grace_period > spec.max_t:
        unit = "E1+E2" if search.budget == "epoch" else "the most compute a trial can use (gic.cost)"
        raise ConfigError(f"{path}: search.grace_period = {search.grace_period:g}: expected at most {unit} = "
                          f"{spec.max_t:g} (search.budget: {search.budget})")
    return spec


def _flat_items(raw: dict[str, Any], prefix: str = ""):
    """Leaves of a nested mapping as (dotted key, value); mappings of augmentation stay whole."""
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name != "model.augmentation":
            yield from _flat_items(value, f"{name}.")
        else:
            yield name, value
