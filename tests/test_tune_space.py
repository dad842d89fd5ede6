"""Search-file validation (one-line errors naming the key), trial params -> TrainConfig, GPU arithmetic."""

import optuna
import pytest

from gic.errors import ConfigError
from tune.config import cpu_threads, gpu_memory_cap_mb, load_search_config, trials_per_gpu
from tune.space import apply_params
from searches import tiny_search, write_and_load


@pytest.fixture
def raw(tmp_path):
    return tiny_search(tmp_path / "data", tmp_path / "results")


def load(raw, tmp_path, *overrides):
    return write_and_load(raw, tmp_path / "search.yaml", list(overrides))


def test_a_valid_file_loads_with_distributions(raw, tmp_path):
    spec = load(raw, tmp_path)
    dists = spec.space.distributions()
    assert isinstance(dists["model.dropout_rate"], optuna.distributions.FloatDistribution)
    assert isinstance(dists["phase2.unfreeze_layers"], optuna.distributions.IntDistribution)  # inferred from the trainer
    assert dists["phase1.learning_rate"].log
    assert dists["model.augmentation"].choices == ("none", "light")
    assert spec.max_t == spec.max_epochs == 3 and spec.time_attr == "training_iteration"
    # on compute: phase 1 on cached features costs 0, each phase-2 epoch 1 + 2 x the top 2 convs' share
    from gic.cost import unfrozen_share

    compute = load(raw, tmp_path, "search.budget=compute")
    assert compute.time_attr == "compute"
    assert compute.max_t == pytest.approx(2 * (1 + 2 * unfrozen_share(32, 2)), abs=1e-5)


def test_fixed_dimensions_go_into_the_trainer(raw, tmp_path):
    raw["space"]["phase2"]["learning_rate"] = 3e-5
    raw["space"]["model"]["augmentation"] = {"value": {"flip": "none", "rotation": 0.1, "zoom": 0.0}}
    spec = load(raw, tmp_path)
    assert "phase2.learning_rate" not in spec.space.dimensions
    assert spec.trainer.phase2.learning_rate == 3e-5
    assert spec.trainer.model.augmentation.flip == "none"


def test_overrides_edit_and_fix_dimensions(raw, tmp_path):
    spec = load(raw, tmp_path, "space.model.dropout_rate.high=0.3", "space.phase2.unfreeze_layers=2",
                "search.num_samples=3", "trainer.phase1.epochs=2")
    assert spec.space.dimensions["model.dropout_rate"].high == 0.3
    assert spec.trainer.phase2.unfreeze_layers == 2 and "phase2.unfreeze_layers" not in spec.space.dimensions
    assert spec.search.num_samples == 3 and spec.max_epochs == 4


def test_base_file_and_trainer_overrides(tmp_path, raw):
    (tmp_path / "base.yaml").write_text("phase1: {epochs: 4, learning_rate: 0.01}\nmodel: {weights: none}\n")
    raw["base"] = "base.yaml"
    raw["trainer"] = {"phase1": {"epochs": 2}}
    spec = load(raw, tmp_path)
    assert spec.trainer.phase1.epochs == 2 and spec.trainer.model.weights == "none"


def test_augmentation_strength_scales_rotation_and_zoom_within_bounds(raw, tmp_path):
    spec = load(raw, tmp_path)
    cfg = apply_params(spec.trainer, {"model.augmentation": "seed", "augmentation_strength": 1.5})
    assert cfg.model.augmentation.rotation == pytest.approx(0.15) and cfg.model.augmentation.zoom == pytest.approx(0.3)
    cfg = apply_params(spec.trainer, {"model.augmentation": "strong", "augmentation_strength": 5})
    assert cfg.model.augmentation.rotation == 0.5 and cfg.model.augmentation.zoom == 0.95
    assert not apply_params(spec.trainer, {"model.augmentation": "none", "augmentation_strength": 2}).model.augmentation.enabled


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["space"]["model"].update(dropout_rate={"low": 0.5, "high": 0.2}), "space.model.dropout_rate: empty or inverted range"),
    (lambda r: r["space"]["model"].update(dropout_rate={"low": 0.3, "high": 0.3}), "empty or inverted range"),
    (lambda r: r["space"]["phase2"].update(unfreeze_layers={"low": 0, "high": 20}), "space.phase2.unfreeze_layers.high = 20"),
    (lambda r: r["space"]["phase2"].update(unfreeze_layers={"low": 0.5, "high": 3, "type": "int"}), "expected a whole number"),
    (lambda r: r["space"]["phase1"].update(learning_rate={"low": 0, "high": 1e-2, "log": True}), "log-scale range needs low > 0"),
    (lambda r: r["space"]["model"].update(dropout_rate={"low": 0.1}), "missing 'high'"),
    (lambda r: r["space"]["model"].update(dropout_rate={"low": 0.1, "high": 0.5, "scale": 2}), "unknown key 'scale'"),
    (lambda r: r["space"]["model"].update(augmentation=["none", "wild"]), "space.model.augmentation.choices = 'wild'"),
    (lambda r: r["space"]["model"].update(augmentation=[]), "expected a non-empty list"),
    (lambda r: r["space"]["model"].update(augmentation=["none", "none"]), "duplicate choices"),
    (lambda r: r["space"]["model"].update(droput_rate={"low": 0.1, "high": 0.2}), "unknown key 'space.model.droput_rate'; did you mean space.model.dropout_rate?"),
    (lambda r: r["space"].update(phase1={"epochs": {"low": 1, "high": 5}}), "space.phase1.epochs: cannot vary"),
    (lambda r: r["space"].update(data={"image_size": [32, 48]}), "space.data.image_size: cannot vary"),
    (lambda r: r["space"].update(augmentation_strength={"low": 0.5, "high": 9}), "expected a number in [0, 5]"),
    (lambda r: r.update(space={}), "space: nothing to search"),
    (lambda r: r["search"].update(num_samples=0), "search.num_samples = 0"),
    (lambda r: r["search"].update(reduction_factor=1), "search.reduction_factor = 1"),
    (lambda r: r["search"].update(grace_period=9), "search.grace_period = 9: expected at most E1+E2 = 3"),
    (lambda r: r["search"].update(grace_period=9, budget="compute"), "search.grace_period = 9: expected at most the most compute"),
    (lambda r: r["search"].update(budget="flops"), "search.budget = 'flops'"),
    (lambda r: r["search"].update(resources_per_trial={"cpu": 1, "gpu": 1.5}), "whole number of GPUs"),
    (lambda r: r["search"].update(resources_per_trial={"cpu": 0}), "search.resources_per_trial.cpu = 0"),
    (lambda r: r["search"].update(name="a/b"), "search.name = 'a/b'"),
    (lambda r: r["search"].update(max_concurent=2), "unknown key 'search.max_concurent'"),
    (lambda r: r.update(serach={}), "unknown key 'serach'"),
    (lambda r: r["trainer"]["phase1"].update(epochs="many"), "trainer.phase1.epochs = 'many'"),
])
def test_bad_search_files_give_one_line_naming_the_key(raw, tmp_path, edit, message):
    edit(raw)
    with pytest.raises(ConfigError) as err:
        load(raw, tmp_path)
    text = str(err.value)
    assert message in text and "\n" not in text and str(tmp_path / "search.yaml") in text


def test_bad_override_and_yaml_syntax(raw, tmp_path):
    with pytest.raises(ConfigError, match=r"--set num_samples: unknown key; did you mean search\.num_samples\?"):
        load(raw, tmp_path, "num_samples=3")
    bad = tmp_path / "bad.yaml"
    bad.write_text("search:\n  name: [x\n")
    with pytest.raises(ConfigError, match="YAML syntax error at line"):
        load_search_config(bad)


def test_demo_and_real_search_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    demo = load_search_config(root / "demo.yaml")
    assert demo.search.num_samples >= 8 and demo.search.resources_per_trial.gpu == 0
    assert demo.trainer.data.source == "synthetic"
    real = load_search_config(root / "search.yaml")
    assert real.search.num_samples == 64 and real.search.resources_per_trial.gpu == 0.25
    assert real.trainer.data.image_size == 180 and real.trainer.model.weights == "imagenet"


@pytest.mark.parametrize("fraction, total, margin, cap", [
    (0.25, 81920, 768, 20480 - 768),    # four trials on an 80 GB GPU
    (0.25, 143771, 768, 35942 - 768),   # four on an H200 (141 GB)
    (0.5, 16384, 512, 8192 - 512),
    (1 / 3, 24576, 0, 8192),
    (1.0, 81920, 768, None),            # a whole GPU: memory growth, no cap
    (2.0, 81920, 768, None),
    (0.0, 81920, 768, None),            # CPU trial
    (0.25, None, 768, None),            # GPU size unknown: growth only
])
def test_fractional_gpu_memory_cap(fraction, total, margin, cap):
    assert gpu_memory_cap_mb(fraction, total, margin) == cap


def test_a_share_smaller_than_the_margin_is_refused():
    with pytest.raises(ConfigError, match="resources_per_trial.gpu = 0.1"):
        gpu_memory_cap_mb(0.1, 8000, 768)


@pytest.mark.parametrize("fraction, per_gpu", [(0.25, 4), (0.5, 2), (1 / 3, 3), (0.3, 3), (1, 1), (0, 0)])
def test_trials_per_gpu(fraction, per_gpu):
    assert trials_per_gpu(fraction) == per_gpu


def test_cpu_threads():
    assert [cpu_threads(c) for c in (0.5, 1, 2, 3.9)] == [1, 1, 2, 3]


def test_cluster_file_keeps_ray_ports_private():
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "configs" / "cluster" / "aws-gpu.yaml"
    cluster = yaml.safe_load(path.read_text())
    ingress = cluster["provider"]["security_group"]["IpPermissions"]
    assert [(rule["FromPort"], rule["ToPort"]) for rule in ingress] == [(22, 22)]  # SSH only
    assert all(r["CidrIp"] != "0.0.0.0/0" for rule in ingress for r in rule["IpRanges"])
    assert "--dashboard-host=127.0.0.1" in " ".join(cluster["head_start_ray_commands"])
    assert "0.0.0.0" not in " ".join(cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"])


def test_tpe_is_seeded_multivariate_with_constant_liar_behind_a_concurrency_limit(tmp_path):
    from tune.schedulers import build_searcher
    from searches import tiny_search, write_and_load

    raw = tiny_search(tmp_path / "data", tmp_path / "results", max_concurrent=3, n_startup_trials=5, seed=7)
    searcher, limited = build_searcher(write_and_load(raw, tmp_path / "search.yaml"))
    sampler = searcher._sampler
    assert (sampler._multivariate, sampler._constant_liar, sampler._n_startup_trials) == (True, True, 5)
    assert limited.max_concurrent == 3
    # seeded: the same seed draws the same first configurations
    again, _ = build_searcher(write_and_load(raw, tmp_path / "again.yaml"))
    assert [searcher.suggest(f"t{i}") for i in range(3)] == [again.suggest(f"t{i}") for i in range(3)]


def test_the_space_is_conditional_dimensions_without_effect_are_not_sampled(raw, tmp_path):
    """augmentation_strength and phase1.augment only with an augmentation; phase2.learning_rate only
    when layers are unfrozen (Optuna's define-by-run space, as OptunaSearch calls it)."""
    raw["space"]["phase2"]["unfreeze_layers"] = {"low": 0, "high": 2}
    raw["space"]["phase1"]["augment"] = [False, True]
    spec = load(raw, tmp_path)
    space = spec.space.define_by_run(spec.trainer)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(60):
        trial = study.ask()
        space(trial)
        seen.append(dict(trial.params))
        study.tell(trial, 0.5)
    for params in seen:
        has_aug = params["model.augmentation"] != "none"
        assert ("augmentation_strength" in params) == has_aug and ("phase1.augment" in params) == has_aug, params
        assert ("phase2.learning_rate" in params) == (params["phase2.unfreeze_layers"] > 0), params
        assert "model.dropout_rate" in params and "phase1.learning_rate" in params
    assert {p["model.augmentation"] for p in seen} == {"none", "light"}
    assert {p["phase2.unfreeze_layers"] for p in seen} == {0, 1, 2}
    import pickle

    assert pickle.loads(pickle.dumps(space)) == space  # Ray saves the searcher with its space
