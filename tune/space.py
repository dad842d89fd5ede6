"""The search space: YAML dimensions -> Optuna distributions; a trial's params -> TrainConfig.

A space mirrors the trainer config's nesting. Each leaf is one of:

    model:
      dropout_rate: {low: 0.1, high: 0.6}              # float range (type inferred from the trainer)
      augmentation: [none, light, seed]               # shorthand for {choices: [...]}
    phase1:
      learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}
      augment: {choices: [true, false]}               # phase 1 on augmented images or cached features
    phase2:
      unfreeze_layers: {type: int, low: 0, high: 6}
      learning_rate: 1.0e-5                            # a plain value fixes the dimension
    augmentation_strength: {low: 0.5, high: 1.5}      # scales the preset's rotation and zoom

Parameter names are the dotted trainer keys (`model.dropout_rate`), so a trial's params are also
valid `--set` overrides of `gic train`. Every bound and choice is checked against the trainer's own
validation, so `phase2.unfreeze_layers: {high: 20}` fails here, before any trial starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from gic.config import AUGMENT_PRESETS, TrainConfig, format_validation_error, set_dotted
from gic.errors import ConfigError
from pydantic import ValidationError

STRENGTH_KEY = "augmentation_strength"  # not a trainer key: it scales model.augmentation
DIMENSION_KEYS = {"type", "low", "high", "log", "step", "choices", "value"}
# Keys that must not vary between trials: the dataset is decoded once per search, and the epochs
# bound the ASHA budget (E1 + E2 epochs, or their compute: gic.cost).
UNSEARCHABLE_PREFIXES = ("data.", "phase1.epochs", "phase2.epochs")
MAX_ROTATION, MAX_ZOOM = 0.5, 0.95  # the trainer's bounds (rotation <= 0.5, zoom < 1)


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter."""

    name: str
    kind: Literal["float", "int", "categorical"]
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self):
        """The Optuna distribution of this dimension."""
        import optuna

        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return optuna.distributions.CategoricalDistribution(list(self.choices))

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.name} in {list(self.choices)}"
        scale = ", log" if self.log else ""
        return f"{self.name} in [{self.low}, {self.high}{scale}]"


@dataclass(frozen=True)
class SearchSpace:
    """Searched dimensions plus fixed values, both keyed by dotted names."""

    dimensions: dict[str, Dimension]
    fixed: dict[str, Any]

    def distributions(self) -> dict[str, Any]:
        """`{name: optuna distribution}` of every dimension (active or not)."""
        return {name: dim.distribution() for name, dim in self.dimensions.items()}

    def define_by_run(self, trainer: TrainConfig) -> "ConditionalSpace":
        """Optuna's define-by-run space for OptunaSearch: a dimension that has no effect given the
        values drawn before it is not sampled (`active`)."""
        return ConditionalSpace(self.dimensions, augmentation=_preset_name(trainer.model.augmentation),
                                unfreeze_layers=trainer.phase2.unfreeze_layers, phase2_epochs=trainer.phase2.epochs)


def _preset_name(aug: Any) -> str:
    """"none" for an augmentation that changes nothing, else its preset name (or "custom")."""
    if isinstance(aug, str):
        return aug
    return "none" if not getattr(aug, "enabled", True) else "custom"


# Dimensions that decide whether others have any effect: sampled first.
PARENTS = ("model.augmentation", "phase2.unfreeze_layers")


def active(name: str, params: dict[str, Any], augmentation: str = "none", unfreeze_layers: int = 0,
           phase2_epochs: int = 1) -> bool:
    """Whether dimension `name` changes the trial given `params` drawn so far (else the base values).

    - `augmentation_strength` and `phase1.augment` act only through an augmentation other than `none`;
    - `phase2.*` acts only when phase 2 trains: some layers unfrozen and phase2.epochs > 0.
    """
    if name in (STRENGTH_KEY, "phase1.augment"):
        return params.get("model.augmentation", augmentation) != "none"
    if name.startswith("phase2.") and name != "phase2.unfreeze_layers":
        return phase2_epochs > 0 and int(params.get("phase2.unfreeze_layers", unfreeze_layers)) > 0
    return True


@dataclass(frozen=True)
class ConditionalSpace:
    """A define-by-run space (a picklable callable: Ray saves the searcher with it)."""

    dimensions: dict[str, Dimension]
    augmentation: str
    unfreeze_layers: int
    phase2_epochs: int

    def __call__(self, trial) -> None:
        """Draw the trial's params with `trial.suggest_*`, parents first, skipping inactive ones."""
        order = sorted(self.dimensions, key=lambda n: (n not in PARENTS, list(self.dimensions).index(n)))
        params: dict[str, Any] = {}
        for name in order:
            if not active(name, params, self.augmentation, self.unfreeze_layers, self.phase2_epochs):
                continue
            dim = self.dimensions[name]
            if dim.kind == "float":
                params[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log, step=dim.step)
            elif dim.kind == "int":
                params[name] = trial.suggest_int(name, dim.low, dim.high, log=dim.log, step=dim.step or 1)
            else:
                params[name] = trial.suggest_categorical(name, list(dim.choices))


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML -> `{dotted key: leaf}`; a leaf is a dimension mapping, a list or a value."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not set(value) <= DIMENSION_KEYS:
            if set(value) & DIMENSION_KEYS:
                extra = sorted(set(value) - DIMENSION_KEYS)
                raise ConfigError(f"space.{name}: unknown key {extra[0]!r}; a dimension has {sorted(DIMENSION_KEYS)}")
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _lookup(raw: dict[str, Any], name: str) -> Any:
    node: Any = raw
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"space.{name}: unknown trainer key {name!r}")
        node = node[part]
    return node


def _check_value(trainer: TrainConfig, name: str, value: Any, where: str) -> None:
    """Refuse a bound or choice that the trainer itself would refuse."""
    raw = trainer.to_dict()
    _lookup(raw, name)
    set_dotted(raw, name, value)
    try:
        TrainConfig.model_validate(raw)
    except ValidationError as err:
        line = format_validation_error(err, "space")
        raise ConfigError(f"space.{where} = {value!r}: {line.split(': ', 2)[-1]}") from None


def _number(name: str, key: str, value: Any, integer: bool) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"space.{name}.{key} = {value!r}: expected a number")
    if integer and int(value) != value:
        raise ConfigError(f"space.{name}.{key} = {value!r}: expected a whole number for an int dimension")
    return int(value) if integer else float(value)


def _parse_dimension(name: str, leaf: Any, current: Any) -> Dimension | None:
    """A dimension, or None when the leaf fixes the value."""
    if isinstance(leaf, list):
        leaf = {"choices": leaf}
    if not isinstance(leaf, dict):
        return None
    if "value" in leaf:
        if len(leaf) > 1:
            raise ConfigError(f"space.{name}: `value` fixes a dimension and cannot go with {sorted(set(leaf) - {'value'})}")
        return None
    if "choices" in leaf:
        extra = set(leaf) - {"choices", "type"}
        if extra or leaf.get("type", "categorical") != "categorical":
            raise ConfigError(f"space.{name}: a categorical dimension has only `choices`, not {sorted(extra) or leaf['type']!r}")
        choices = leaf["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"space.{name}.choices: expected a non-empty list")
        for choice in choices:
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise ConfigError(f"space.{name}.choices: {choice!r} is not a plain value (use a preset name)")
        if len(set(map(repr, choices))) != len(choices):
            raise ConfigError(f"space.{name}.choices: duplicate choices in {choices}")
        return Dimension(name, "categorical", choices=tuple(choices))
    missing = [k for k in ("low", "high") if k not in leaf]
    if missing:
        raise ConfigError(f"space.{name}: expected `low` and `high` (or `choices`, or a plain value); missing {missing[0]!r}")
    kind = leaf.get("type")
    if kind is None:
        kind = "int" if isinstance(current, int) and not isinstance(current, bool) else "float"
    if kind not in ("float", "int"):
        raise ConfigError(f"space.{name}.type = {kind!r}: expected float, int or categorical")
    if isinstance(current, (bool, str)):
        raise ConfigError(f"space.{name}: {current!r}-valued key; expected `choices`, not a range")
    integer = kind == "int"
    low = _number(name, "low", leaf["low"], integer)
    high = _number(name, "high", leaf["high"], integer)
    if not low < high:
        raise ConfigError(f"space.{name}: empty or inverted range low={low} high={high}; expected low < high (or a plain value to fix it)")
    log = leaf.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"space.{name}.log = {log!r}: expected true or false")
    if log and low <= 0:
        raise ConfigError(f"space.{name}.low = {low}: a log-scale range needs low > 0")
    step = leaf.get("step")
    if step is not None:
        step = _number(name, "step", step, integer)
        if step <= 0 or step > high - low:
            raise ConfigError(f"space.{name}.step = {step}: expected 0 < step <= high - low")
        if log:
            raise ConfigError(f"space.{name}: `step` and `log` cannot go together")
    return Dimension(name, kind, low=low, high=high, log=log, step=step)


def parse_space(raw: Any, trainer: TrainConfig) -> SearchSpace:
    """Validate a `space:` section against the trainer config.

    Args:
        raw: the nested mapping under `space:` in the search YAML.
        trainer: the base trainer config (defaults <- base file <- `trainer:`).

    Returns:
        The searched dimensions and the fixed values.

    Raises:
        ConfigError: one line naming the key and what was expected.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"space: expected a mapping of trainer keys, got {type(raw).__name__}")
    leaves = _flatten(raw)
    base = trainer.to_dict()
    dims: dict[str, Dimension] = {}
    fixed: dict[str, Any] = {}
    for name, leaf in leaves.items():
        if name.startswith(UNSEARCHABLE_PREFIXES) or name in ("phase1.epochs", "phase2.epochs"):
            raise ConfigError(f"space.{name}: cannot vary between trials (data is loaded once per search and the "
                              "epochs are the ASHA budget); set it under `trainer:`")
        if name == STRENGTH_KEY:
            current: Any = 1.0
        else:
            current = _lookup(base, name)
        dim = _parse_dimension(name, leaf, current)
        if dim is None:
            value = leaf["value"] if isinstance(leaf, dict) else leaf
            if name == STRENGTH_KEY:
                _check_strength(name, value)
            else:
                _check_value(trainer, name, value, name)
            fixed[name] = value
            continue
        if name == STRENGTH_KEY:
            for value in (dim.low, dim.high) if dim.kind != "categorical" else dim.choices:
                _check_strength(name, value)
        elif dim.kind == "categorical":
            for choice in dim.choices:
                _check_value(trainer, name, choice, f"{name}.choices")
        else:
            _check_value(trainer, name, dim.low, f"{name}.low")
            _check_value(trainer, name, dim.high, f"{name}.high")
        dims[name] = dim
    if not dims:
        raise ConfigError("space: nothing to search; give at least one range or list of choices")
    return SearchSpace(dimensions=dims, fixed=fixed)


def _check_strength(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 5:
        raise ConfigError(f"space.{name} = {value!r}: expected a number in [0, 5] (1 = the preset as is)")


def apply_params(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """The trainer config of one trial: the base config with the trial's params (dotted keys) set.

    `augmentation_strength` multiplies the rotation and zoom of the trial's augmentation (clipped
    to the trainer's bounds), after a preset name has been expanded.

    Raises:
        ConfigError: when the params make an invalid config.
    """
    raw = base.to_dict()
    strength = None
    for name, value in sorted(params.items()):
        if name == STRENGTH_KEY:
            strength = float(value)
        else:
            set_dotted(raw, name, value)
    if strength is not None:
        aug = raw["model"]["augmentation"]
        aug = dict(AUGMENT_PRESETS[aug]) if isinstance(aug, str) else dict(aug)
        aug["rotation"] = round(min(MAX_ROTATION, aug["rotation"] * strength), 6)
        aug["zoom"] = round(min(MAX_ZOOM, aug["zoom"] * strength), 6)
        raw["model"]["augmentation"] = aug
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, "trial params")) from None
