"""Checks before any trial starts (tune.preflight, tune.search.init_ray), each one `error:` line with
exit code 2; and a trial's GPU honesty (tune.trainable.configure_worker), without a GPU.

The multi-node cases fake Ray's node table: what is checked is the decision, not Ray. The search
that passes every check on a real cluster is tests/test_cluster_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gic.errors import ConfigError, GicError
from tune import preflight
from searches import tiny_search, write_and_load

ROOT = Path(__file__).resolve().parents[1]


def _spec(synth_dir, tmp_path, storage, **search):
    return write_and_load(tiny_search(synth_dir, storage, name="pre", num_samples=2, epochs=(1, 1), **search),
                          tmp_path / "search.yaml")


def _nodes(monkeypatch, *cpus: float, driver: int = 0):
    nodes = [{"NodeID": f"n{i}", "Alive": True, "NodeManagerAddress": f"10.0.0.{i + 1}",
              "Resources": {"CPU": c}} for i, c in enumerate(cpus)]
    monkeypatch.setattr(preflight, "_alive_nodes", lambda: nodes)
    monkeypatch.setattr(preflight, "_driver_node_id", lambda: f"n{driver}")


def _cli(args: list[str], tmp_path: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tune.cli", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


# ------------------------------------------------------------------------------------------ storage
def test_a_local_storage_path_is_refused_where_trials_run_on_other_nodes(synth_dir, tmp_path, monkeypatch):
    spec = _spec(synth_dir, tmp_path, tmp_path / "results")
    path = str(tmp_path / "results" / "pre")
    _nodes(monkeypatch, 0, 8)  # the head (0 CPUs) and a worker node: the trials would run there
    with pytest.raises(GicError, match=r"search.storage_path = .*: a folder of this machine, but the trials run on "
                                       r"other nodes .*shared_filesystem: true") as err:
        preflight.check_storage(spec, path, echo=lambda line: None)
    assert "\n" not in str(err.value)
    _nodes(monkeypatch, 0)  # a head alone that cannot run a trial: an autoscaler would add nodes for it
    with pytest.raises(GicError, match="a folder of this machine"):
        preflight.check_storage(spec, path, echo=lambda line: None)
    _nodes(monkeypatch, 2)  # one machine: its own folder is fine
    preflight.check_storage(spec, path, echo=lambda line: None)
    _nodes(monkeypatch, 0, 8, 8)  # a shared filesystem, declared
    shared = _spec(synth_dir, tmp_path, tmp_path / "results", shared_filesystem=True)
    preflight.check_storage(shared, path, echo=lambda line: None)


def test_a_storage_uri_that_cannot_be_written_or_reached_is_refused(synth_dir, tmp_path, monkeypatch):
    _nodes(monkeypatch, 2)
    spec = _spec(synth_dir, tmp_path, "file:///proc/gic-results")
    with pytest.raises(GicError, match=r"search.storage_path = file:///proc/gic-results: cannot write there from the "
                                       r"driver \(.*\)"):
        preflight.check_storage(spec, "file:///proc/gic-results/pre", echo=lambda line: None)
    # nothing listens there: S3's client retries; the check gives up after its timeout, one line
    closed = "s3://bucket/gic?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    spec = _spec(synth_dir, tmp_path, closed)
    started = time.time()
    with pytest.raises(GicError, match=r"search.storage_path = s3://bucket/gic(: no answer within 2 s|: cannot write)"):
        preflight.check_storage(spec, closed.replace("/gic?", "/gic/pre?"), echo=lambda line: None, timeout_s=2)
    assert time.time() - started < 20


def test_a_storage_uri_is_written_by_the_driver_and_read_on_every_node(synth_dir, tmp_path):
    """On a real local Ray of one node: the probe is written, read back and removed."""
    import ray

    spec = _spec(synth_dir, tmp_path, f"file://{tmp_path}/store")
    lines: list[str] = []
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        preflight.check_storage(spec, f"file://{tmp_path}/store/pre", echo=lines.append)
    finally:
        ray.shutdown()
    assert lines == [f"storage file://{tmp_path}/store: written from the driver, read back on 1 node(s)"]
    assert list((tmp_path / "store").iterdir()) == []  # the probe file is gone


# ---------------------------------------------------------------------------------------------- GPUs
def test_a_gpu_share_too_small_for_a_memory_cap_is_refused(synth_dir, tmp_path):
    spec = _spec(synth_dir, tmp_path, tmp_path / "r", resources_per_trial={"cpu": 1, "gpu": 0.1,
                                                                          "gpu_memory_margin_mb": 768})
    preflight.check_gpu_share(spec, {"10.0.0.2": [81920]})  # 8192 MB - 768: fine
    with pytest.raises(ConfigError, match=r"search.resources_per_trial.gpu = 0.1: 409 MB of a 4096 MB GPU leaves "
                                          r"-359 MB .* \(node 10.0.0.3\)"):
        preflight.check_gpu_share(spec, {"10.0.0.2": [81920], "10.0.0.3": [4096, 81920]})
    with pytest.raises(GicError, match=r"node 10.0.0.2 has GPUs but NVML cannot read their memory \(NVMLError"):
        preflight.check_gpu_share(spec, {"10.0.0.2": "NVMLError_LibraryNotFound: NVML Shared Library Not Found"})
    whole = _spec(synth_dir, tmp_path, tmp_path / "r", resources_per_trial={"cpu": 1, "gpu": 1})
    preflight.check_gpu_share(whole, {"10.0.0.2": "no NVML"})  # a whole GPU needs no cap


class _FakeNvml:
    """pynvml's calls that tune.trainable makes, for one 16 GB GPU, or failing."""

    def __init__(self, fail: bool = False):
        self.fail = fail

    def nvmlInit(self):
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Memory", (), {"total": 16384 * 2**20})()


def test_a_trial_with_a_gpu_share_fails_loudly_without_a_gpu_or_nvml(monkeypatch):
    """On this machine TensorFlow sees no GPU: a trial that holds 0.25 GPU must not train on the CPU."""
    import ray

    from tune import trainable

    settings = {"cpu": 1, "gpu": 0.25, "gpu_memory_margin_mb": 768}
    monkeypatch.setattr(trainable, "_configured", True)  # this test process keeps its TensorFlow threads
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: [])
    with pytest.raises(trainable.GpuError, match="holds 0.25 GPU but Ray assigned it none"):
        trainable.configure_worker(settings)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: ["0"])
    monkeypatch.setattr(trainable, "_nvml", lambda: _FakeNvml(fail=True))
    with pytest.raises(trainable.GpuError, match=r"NVML cannot read the memory of GPU 0 .*no memory cap"):
        trainable.configure_worker(settings)
    monkeypatch.setattr(trainable, "_nvml", lambda: _FakeNvml())
    assert trainable.gpu_total_memory_mb("0") == 16384
    with pytest.raises(trainable.GpuError, match=r"holds 0.25 GPU but TensorFlow sees none .*train on the CPU"):
        trainable.configure_worker(settings)
    trainable.check_gpu(0, None)  # a CPU trial: nothing to check


# -------------------------------------------------------------------------------- address, weights
def test_an_address_that_does_not_answer_is_one_line_and_exit_2_in_seconds(synth_dir, tmp_path):
    from cluster_harness import free_port

    _spec(synth_dir, tmp_path, tmp_path / "results")
    started = time.time()
    done = _cli(["run", "--config", "search.yaml", "--address", f"127.0.0.1:{free_port()}"], tmp_path)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: --address 127.0.0.1:")
    assert "no Ray cluster answers at" in done.stderr and "Traceback" not in done.stderr
    assert time.time() - started < 60
    assert not (tmp_path / "results" / "pre").exists()


def test_weights_that_cannot_be_resolved_stop_the_search_before_any_trial(synth_dir, tmp_path):
    from tune.search import run_search

    missing = tmp_path / "vgg16.weights.h5"
    raw = tiny_search(synth_dir, tmp_path / "results", name="pre", num_samples=2, epochs=(1, 1))
    raw["trainer"]["model"]["weights"] = str(missing)
    spec = write_and_load(raw, tmp_path / "search.yaml")
    lines: list[str] = []
    with pytest.raises(GicError, match=rf"model.weights: {missing}: no such file"):
        run_search(spec, echo=lines.append, num_cpus=1)
    assert not any("started" in line for line in lines)
    assert not (tmp_path / "results" / "pre").exists()  # nothing half-written


def test_without_an_address_the_search_starts_its_own_ray_whatever_ray_start_left(synth_dir, tmp_path):
    """A dead cluster recorded by an earlier `ray start` (ray_current_cluster): a plain ray.init()
    would retry its address for minutes; the search starts a local Ray instead."""
    from cluster_harness import free_port

    raw = tiny_search(synth_dir, tmp_path / "results", name="local", num_samples=1, epochs=(1, 0),
                      debug={"dry_run": True})
    write_and_load(raw, tmp_path / "search.yaml")
    ray_tmp = Path(tempfile.mkdtemp(prefix="gicr", dir="/tmp"))  # short: Ray's socket paths live below it
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
        done = _cli(["run", "--config", "search.yaml"], tmp_path, timeout=120, RAY_TMPDIR=str(ray_tmp))
    finally:
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "done in" in done.stdout


# ---------------------------------------------------------------------------------------- security
def test_the_cluster_launcher_file_turns_on_token_authentication():
    """Ray < 2.61 starts a `ray start` cluster without authentication unless RAY_AUTH_MODE=token: every
    node of configs/cluster/aws-gpu.yaml starts with it, and gets the user's token file."""
    import yaml

    cluster = yaml.safe_load((ROOT / "configs" / "cluster" / "aws-gpu.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c.split("ray start")[0] for c in starts), cluster[key]
    assert cluster["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("chmod 600" in c and "~/.ray/auth_token" in c for c in cluster["setup_commands"])
