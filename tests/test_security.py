"""Security: credentials never leak, the local Ray serves no dashboard to the network.

Covered elsewhere (not repeated here):
- archive extraction refuses traversal, absolute paths, links, devices and FIFOs, before writing:
  test_data.py::test_safe_extract_refuses_unsafe_zip_members_before_writing and
  ::test_safe_extract_refuses_unsafe_tar_members_before_writing;
- a warning when kaggle.json is readable by others, and no key in its errors:
  test_data.py::test_kaggle_json_checks_never_show_the_key, ::test_download_extracts_the_zip_safely_and_cleans_up;
- models load in Keras safe mode, a Lambda layer is refused:
  test_model.py::test_safe_loading_refuses_lambda_layers_and_non_models;
- the cluster launcher file opens SSH only and keeps the dashboard on 127.0.0.1:
  test_tune_space.py::test_cluster_file_keeps_ray_ports_private.
"""

from __future__ import annotations

import io
import sys
import types
import uuid
import zipfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gic.cli import main as gic_main
from tune.cli import main as tune_main
from searches import tiny_search


@pytest.fixture
def fake_kaggle(monkeypatch):
    """The kaggle modules replaced by a stand-in that 'downloads' a small zip: no network."""

    class Api:
        def authenticate(self):
            pass

        def dataset_download_files(self, dataset, path=None, quiet=True, unzip=False, **_):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("traindata/traindata/men/a.jpg", b"not really a jpeg")
            Path(path, "menwomen-classification.zip").write_bytes(buf.getvalue())

    extended = types.ModuleType("kaggle.api.kaggle_api_extended")
    extended.KaggleApi = Api
    for name, module in (("kaggle", types.ModuleType("kaggle")), ("kaggle.api", types.ModuleType("kaggle.api")),
                         ("kaggle.api.kaggle_api_extended", extended)):
        monkeypatch.setitem(sys.modules, name, module)


def _files_containing(folder: Path, secret: bytes) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and secret in path.read_bytes():
                hits.append(str(path))
        except OSError:
            continue
    return hits


def test_kaggle_credentials_never_appear_in_output_logs_or_results(synth_dir, tmp_path, monkeypatch, fake_kaggle):
    import ray

    secret = f"kgl-{uuid.uuid4().hex}"
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", secret)
    monkeypatch.setenv("GIC_CACHE_DIR", str(tmp_path / "cache"))
    outputs = []

    # the download path
    done = CliRunner().invoke(gic_main, ["data", "download", "--dest", str(tmp_path / "raw")])
    assert done.exit_code == 0, done.output
    outputs.append(done.output)

    # a tiny training run
    cfg = tmp_path / "train.yaml"
    cfg.write_text(f"data: {{dir: {synth_dir}, image_size: 32, batch_size: 16}}\nmodel: {{weights: none, dense_units: 8}}\n"
                   "phase1: {epochs: 1, augment: false}\nphase2: {epochs: 0}\nprecision: fp32\n")
    done = CliRunner().invoke(gic_main, ["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert done.exit_code == 0, done.output
    outputs.append(done.output)

    # a tiny search (dry run: the machinery, its logs and its results), with the key in the environment
    raw = tiny_search(synth_dir, tmp_path / "results", name="secret", num_samples=2, debug={"dry_run": True})
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(raw))
    done = CliRunner().invoke(tune_main, ["run", "--config", str(tmp_path / "search.yaml")])
    assert done.exit_code == 0, done.output
    outputs.append(done.output)
    assert not ray.is_initialized()

    assert all(secret not in text for text in outputs)
    assert _files_containing(tmp_path, secret.encode()) == []
    session = Path("/tmp/ray/session_latest")
    if session.exists():
        assert _files_containing(session.resolve() / "logs", secret.encode()) == []


def test_local_ray_serves_no_dashboard_to_the_network():
    """What a local search exposes: no dashboard (or job API) on any interface.

    Ray 2.60 cannot keep its core ports (GCS, raylet, object manager, workers) on loopback: they
    listen on every interface whatever `_node_ip_address` says. They are covered by Ray's token
    authentication; the README says to keep them behind a firewall. This test pins what we control.
    """
    import psutil
    import ray

    from tune.ray_start import init_ray

    assert init_ray(None, num_cpus=1)
    try:
        me = psutil.Process()
        procs = {p.pid: p for p in me.children(recursive=True)}
        listening = [(c.pid, c.laddr) for c in psutil.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN and c.pid in procs]
        assert listening  # the core ports are there (and listen widely: see the docstring)
        def is_dashboard(proc) -> bool:  # the dashboard head or its agent (not the raylet that starts it)
            return any(arg.endswith(("dashboard/dashboard.py", "dashboard/agent.py")) for arg in proc.cmdline()[:3])

        for pid, addr in listening:
            assert addr.port != 8265, (procs[pid].cmdline()[:3], addr)  # Ray's dashboard / job API port
            if is_dashboard(procs[pid]):
                assert addr.ip in ("127.0.0.1", "::1"), (procs[pid].cmdline()[:3], addr)
        for proc in procs.values():
            if any(arg.endswith("dashboard/dashboard.py") for arg in proc.cmdline()[:3]):
                assert "--host=127.0.0.1" in proc.cmdline() and "--minimal" in proc.cmdline()
    finally:
        ray.shutdown()
