"""Typed, validated trainer configuration: one place for every default.

A config file only states what differs from the defaults below (the seed recipe of the Keras
notebook this project started from); `--set key=value` overrides go on top. Unknown keys, wrong
types and out-of-range values are refused with one line that names the key, the value and what is
allowed.

    cfg = load_config("configs/demo-train.yaml", overrides=["phase1.epochs=2"])
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from gic.errors import ConfigError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NUM_CONV_LAYERS = 13  # VGG16 has 13 conv layers: the most that phase 2 can unfreeze


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SynthSpec(_Strict):
    """How to generate the synthetic stand-in dataset when `data.source` is `synthetic`."""

    per_class: int = Field(60, ge=2, description="training images per class")
    size: int = Field(64, ge=16, le=1024, description="side of the generated images in px")
    seed: int = 0


AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "none": {"flip": "none", "rotation": 0.0, "zoom": 0.0},
    "light": {"flip": "horizontal", "rotation": 0.05, "zoom": 0.1},
    "seed": {"flip": "horizontal", "rotation": 0.1, "zoom": 0.2},  # the notebook's block
    "strong": {"flip": "horizontal", "rotation": 0.2, "zoom": 0.3},
}


class AugmentConfig(_Strict):
    """Random flip, rotation (fraction of a full turn) and zoom (fraction of the size)."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "horizontal"
    rotation: float = Field(0.1, ge=0.0, le=0.5)
    zoom: float = Field(0.2, ge=0.0, lt=1.0)

    @property
    def enabled(self) -> bool:
        """True when any of flip, rotation or zoom changes an image."""
        return self.flip != "none" or self.rotation > 0 or self.zoom > 0


class DataConfig(_Strict):
    """`data:`: where the images are, their side in px, the batch size and the caches."""

    source: Literal["folder", "synthetic", "kaggle"] = "folder"
    dir: Path = Path("data/menwomen")
    image_size: int = Field(180, ge=32, le=1024)
    batch_size: int = Field(32, ge=1)
    on_bad_image: Literal["error", "skip"] = "error"
    # Refuse images with more pixels than this (decompression bombs); a JPEG counts at the reduced
    # size it is decoded at, so a 9000x8000 phone photo passes. gic.data.MAX_IMAGE_PIXELS.
    max_image_pixels: int = Field(64_000_000, ge=1)
    cache_dir: Path | None = None  # None: $GIC_CACHE_DIR or ~/.cache/gic
    synthetic: SynthSpec = SynthSpec()


class ModelConfig(_Strict):
    """The `model:` section: base weights, the head (dense units, activation, dropout, norm), augmentation."""
    weights: str = "imagenet"  # imagenet | none | hed | path to a VGG16 no-top .weights.h5
    dense_units: int = Field(256, ge=1)
    # The notebook's Dense(256) had no activation although its README says ReLU: we default to ReLU.
    dense_activation: Literal["relu", "linear", "gelu", "elu", "tanh"] = "relu"
    dropout_rate: float = Field(0.5, ge=0.0, lt=1.0)
    # Not in the seed recipe (none). Pooled features of weights other than ImageNet's (e.g. hed) can
    # be large and uneven; standardising them (batch) lets a small head learn in a few epochs.
    head_norm: Literal["none", "batch", "layer"] = "none"
    augmentation: AugmentConfig = AugmentConfig()

    @field_validator("augmentation", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in AUGMENT_PRESETS:
                raise ValueError(f"unknown preset {value!r}; expected one of {sorted(AUGMENT_PRESETS)} or a mapping")
            return dict(AUGMENT_PRESETS[value])
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        if not value:
            raise ValueError("expected imagenet, none, hed or the path of a VGG16 no-top .weights.h5 file")
        return value


Optimizer = Literal["rmsprop", "adam", "adamw", "sgd"]


class Phase1Config(_Strict):
    """Phase 1: the VGG16 base frozen, only the new head trains."""

    epochs: int = Field(30, ge=0)
    optimizer: Optimizer = "rmsprop"
    learning_rate: float = Field(1e-3, gt=0.0, le=10.0)
    augment: bool = True  # False trains the head on cached base features: much cheaper


class Phase2Config(_Strict):
    """Phase 2: the top `unfreeze_layers` conv layers train too, at a low learning rate."""

    epochs: int = Field(30, ge=0)
    optimizer: Optimizer = "adam"
    learning_rate: float = Field(1e-5, gt=0.0, le=10.0)
    unfreeze_layers: int = Field(3, ge=0, le=NUM_CONV_LAYERS)  # the seed's layers[:-4] is 3


class TrainConfig(_Strict):
    """The whole trainer config; the defaults are the seed notebook's recipe (configs/baseline.yaml)."""

    seed: int = 42
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    phase1: Phase1Config = Phase1Config()
    phase2: Phase2Config = Phase2Config()
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    jit_compile: Literal["auto", "on", "off"] = "auto"
    steps_per_execution: int = Field(1, ge=1)
    deterministic: bool = False  # force deterministic TF kernels (slower; for reproducibility checks)

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def total_epochs(self) -> int:
        """Length of the global epoch counter 1..E1+E2 (phase 2 counts only when it trains)."""
        return self.phase1.epochs + (self.phase2.epochs if self.fine_tunes else 0)

    @property
    def fine_tunes(self) -> bool:
        """True when phase 2 trains: some epochs and some conv layers unfrozen."""
        return self.phase2.epochs > 0 and self.phase2.unfreeze_layers > 0

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-able dict: `TrainConfig.model_validate(cfg.to_dict()) == cfg`."""
        return self.model_dump(mode="json")

    def with_overrides(self, overrides: dict[str, Any] | list[str]) -> "TrainConfig":
        """A copy with dotted-key overrides applied and validated."""
        raw = self.to_dict()
        items = parse_overrides(overrides, known=config_keys()) if isinstance(overrides, list) else overrides
        for key, value in items.items():
            set_dotted(raw, key, value)
        return validate_config(raw, overrides=items)


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `raw["a"]["b"] = value` for key "a.b", creating the inner mappings."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def config_keys(tree: dict[str, Any] | None = None, prefix: str = "") -> list[str]:
    """Every dotted key of a config tree, sections and leaves: `seed`, `data`, `data.dir`, ...

    Args:
        tree: a config as a plain dict [default: the trainer's defaults, `TrainConfig().to_dict()`].
        prefix: put before every key (`trainer.`).
    """
    tree = TrainConfig().to_dict() if tree is None else tree
    keys = []
    for key, value in tree.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += config_keys(value, f"{prefix}{key}.")
    return keys


def closest_key(key: str, known: Iterable[str]) -> str | None:
    """The valid key that a misspelt dotted `key` most likely meant, or None (difflib).

    Tried in order: a sibling with a similar name (`phase1.epoch` -> `phase1.epochs`), a similar
    dotted key (`dta.dir` -> `data.dir`), then a similar name in another section (`dropout` ->
    `model.dropout_rate`, `phase1.dropout_rate` -> `model.dropout_rate`). A section that holds `key`
    is never suggested for it (`phase1.lr` does not mean `phase1`).
    """
    known = [k for k in known if not key.startswith(f"{k}.") and k != key]
    parent, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in known if k.rpartition(".")[0] == parent}
    match = difflib.get_close_matches(leaf, list(siblings), n=1, cutoff=0.6)
    if match:
        return siblings[match[0]]
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if match:
        return match[0]
    by_leaf: dict[str, str] = {}
    for k in known:
        by_leaf.setdefault(k.rpartition(".")[2], k)
    match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.7)
    return by_leaf[match[0]] if match else None


def unknown_key_message(key: str, known: Iterable[str], source: str | None = None) -> str:
    """One line for an unknown dotted `key`, with the closest valid key when there is one.

    `source` None means the key came from `--set`: `--set phase1.epoch: unknown key; did you mean
    phase1.epochs?`; otherwise it names the file: `c.yaml: unknown key 'phase1.epoch'; did you mean
    phase1.epochs?`. Without a close key, the valid keys of its section are listed.
    """
    known = list(known)
    hint = closest_key(key, known)
    if hint is not None:
        tail = f"; did you mean {hint}?"
    else:
        parent = key.rpartition(".")[0]
        level = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent]
        where = f"{parent} has" if parent in known else "expected one of"
        tail = f"; {where} {', '.join(level)}" if level else ""
    return f"--set {key}: unknown key{tail}" if source is None else f"{source}: unknown key {key!r}{tail}"


def parse_overrides(pairs: list[str], known: Iterable[str] | None = None) -> dict[str, Any]:
    """`["a.b=3", "c=none"]` -> `{"a.b": 3, "c": "none"}`; values are parsed as YAML scalars.

    Args:
        pairs: `key=value` strings, as given to `--set`.
        known: the valid dotted keys (`config_keys()`); when given, an unknown key is refused with
            the closest valid one (`--set phase1.epoch: unknown key; did you mean phase1.epochs?`).

    Raises:
        ConfigError: a pair without `=`, or an unknown key.
    """
    known = None if known is None else list(known)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value, e.g. phase1.epochs=5")
        if known is not None and key.strip() not in known:
            raise ConfigError(unknown_key_message(key.strip(), known))
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                value = float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
            except ValueError:
                pass
        out[key.strip()] = value
    return out


def format_validation_error(err: ValidationError, source: str = "config", known: Iterable[str] | None = None,
                            prefix: str = "", overrides: Iterable[str] = ()) -> str:
    """The first problem of a pydantic error as one line: `file: key = value: what is allowed`.

    An unknown key gets the closest valid one: `file: unknown key 'phase1.epoch'; did you mean
    phase1.epochs?`, or `--set phase1.epoch: unknown key; ...` when it lies under an `overrides` key.

    Args:
        err: the error of validating a mapping.
        source: where the mapping came from (a file name).
        known: the model's valid dotted keys [default: the trainer's, `config_keys()`].
        prefix: the section the model sits in (`search`): put before every key named.
        overrides: the `--set` keys applied to the mapping, to tell where an unknown key came from.
    """
    first = err.errors()[0]
    key = ".".join([*([prefix] if prefix else []), *(str(p) for p in first["loc"])]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        known = config_keys() if known is None else known
        known = [f"{prefix}.{k}" for k in known] if prefix else known
        from_set = any(key == o or key.startswith(f"{o}.") for o in overrides)
        return unknown_key_message(key, known, None if from_set else source)
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    return f"{source}: {key}{shown}: {msg}"


def validate_config(raw: Any, source: str = "config", overrides: Iterable[str] = ()) -> TrainConfig:
    """Validate a plain mapping into a TrainConfig, raising ConfigError with one line.

    Args:
        raw: the mapping (a file's content with `--set` overrides applied).
        source: the file it came from, named in errors.
        overrides: the `--set` keys applied to it: an unknown key under one of them is named as
            `--set KEY`, not as the file's.
    """
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    try:
        return TrainConfig.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, overrides=overrides)) from None


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file, turning a missing file or a syntax error into a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: YAML syntax error{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; expected YAML") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults <- YAML file <- `--set` overrides, validated once at the end.

    Raises:
        ConfigError: one line naming the file or the `--set` key; an unknown key comes with the
            closest valid one (`--set phase1.epoch: unknown key; did you mean phase1.epochs?`).
    """
    sets = parse_overrides(overrides or [], known=config_keys())  # before reading the file: a typo is cheap
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None:
        source = str(path)
        loaded = read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(loaded).__name__}")
        raw = loaded or {}
    for key, value in sets.items():
        set_dotted(raw, key, value)
    return validate_config(raw, source, overrides=sets)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write a complete config that `load_config` accepts as is (atomically)."""
    from gic.files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def config_changes(old: dict, new: dict, safe: tuple[str, ...] = (), prefix: str = "") -> list[str]:
    """`key old -> new` for every dotted key whose value differs between two nested config dicts,
    leaving out the keys in `safe` (and those under a `safe` prefix ending in a dot)."""
    changes = []
    for key in sorted(set(old) | set(new)):
        dotted = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, safe, f"{dotted}.")
        elif a != b and not any(dotted == k or (k.endswith('.') and dotted.startswith(k)) for k in safe):
            changes.append(f"{dotted} {a!r} -> {b!r}")
    return changes
