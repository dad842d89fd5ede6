"""Checks that run before any trial starts: each failure is one `error:` line (a GicError, exit code 2).

    check_address("auto")                       # before ray.init: a cluster answers there, quickly
    preflight(spec, experiment_path, owns_ray)  # after ray.init: all of the following
    check_resources(spec, owns_ray)             # a trial's CPUs and GPUs exist in the cluster
    check_storage(spec, experiment_path)        # every node can write the experiment
    check_gpu_share(spec)                       # every GPU node leaves a usable memory cap per trial

What each one prevents:
- a trial that asks for more CPUs or GPUs than the cluster has: Ray would wait for it forever;
- a cluster address that does not answer: ray.init would retry a dead address for minutes;
- a local `storage_path` on a cluster of several nodes: Ray refuses every checkpoint a trial writes
  on a node that does not see the folder (its storage marker file is missing there), so every trial
  would be retried and end errored;
- a URI that cannot be reached or written, from the driver or from any node;
- a GPU share so small that a trial's memory cap leaves no room to train, or a GPU node where NVML
  cannot say how much memory its GPUs have (the trials would run uncapped).
The base weights are checked where they are resolved (tune.features.resolve_weights).
"""

from __future__ import annotations

import socket
import threading
import uuid
from typing import Any, Callable

from gic.errors import ConfigError, GicError

ADDRESS_TIMEOUT_S = 10.0  # a cluster's GCS answers a TCP connect in milliseconds
STORAGE_TIMEOUT_S = 60.0  # a write, a read and a delete of a few bytes, with the client's own retries
NODE_TIMEOUT_S = 120.0  # a 0-CPU task per node: a worker process starts, imports pyarrow, reads a file


# ------------------------------------------------------------------------------------------ address
def resolve_address(address: str) -> str:
    """host:port of the cluster that `address` names (`auto`: RAY_ADDRESS, else the cluster the last
    `ray start` on this machine recorded; `ray://host:port`: a Ray Client server)."""
    if address.startswith("ray://"):
        return address[len("ray://"):].split("/", 1)[0]
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            found = canonicalize_bootstrap_address("auto")
        except Exception:  # noqa: BLE001 - ConnectionError when none is found; anything else alike
            found = None
        if not found:
            raise GicError("--address auto: no Ray cluster found on this machine (no RAY_ADDRESS, and no running "
                           "cluster started with `ray start`); start one, or leave out --address for a local Ray")
        return found
    return address


def check_address(address: str, timeout_s: float = ADDRESS_TIMEOUT_S) -> str:
    """The cluster's host:port, once something answers there within `timeout_s`.

    Raises:
        GicError: nothing answers (a cluster that is gone, a wrong host or port).
    """
    hostport = resolve_address(address)
    host, _, port = hostport.rpartition(":")
    try:
        port_number = int(port)
    except ValueError:
        raise GicError(f"--address {address}: expected auto or host:port, e.g. 10.0.0.5:6379") from None
    try:
        socket.create_connection((host.strip("[]"), port_number), timeout=timeout_s).close()
    except OSError as err:
        reason = "timed out" if isinstance(err, socket.timeout) else (err.strerror or str(err))
        raise GicError(f"--address {address}: no Ray cluster answers at {hostport} within {timeout_s:g} s ({reason}); "
                       "check that the cluster runs (ray status) and the address") from None
    return hostport


# ------------------------------------------------------------------------------------------ storage
def _alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _driver_node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def _trial_fits(node: dict[str, Any], spec) -> bool:
    r = spec.search.resources_per_trial
    have = node.get("Resources", {})
    return float(have.get("CPU", 0)) + 1e-9 >= r.cpu and float(have.get("GPU", 0)) + 1e-9 >= r.gpu


def _with_timeout(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """fn() in a thread; GicError naming `what` when it takes longer than timeout_s."""
    out: dict[str, Any] = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            out["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise GicError(f"{what}: no answer within {timeout_s:g} s")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _probe_read(location: str, name: str) -> str | None:
    """Read the probe file, on a node of the cluster (a Ray task)."""
    from tune.experiment import ExperimentFolder

    try:
        return ExperimentFolder(location).read_text(name)
    except Exception as err:  # noqa: BLE001 - reported as text: the driver names the node
        return f"error: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"


def check_storage(spec, experiment_path: str, echo: Callable[[str], None] = print,
                  timeout_s: float = STORAGE_TIMEOUT_S) -> None:
    """Every node can write the experiment: a local folder only on one node (or a declared shared
    filesystem), a URI that the driver can write and every node can read back.

    Raises:
        GicError: one line naming storage_path and what to do.
    """
    from tune.experiment import ExperimentFolder, is_uri, parent

    storage = spec.search.storage_path
    nodes = _alive_nodes()
    if not is_uri(experiment_path):
        if spec.search.shared_filesystem:
            return
        here = _driver_node_id()
        elsewhere = [n for n in nodes if n["NodeID"] != here]
        driver_node = next((n for n in nodes if n["NodeID"] == here), None)
        if elsewhere or (driver_node is not None and not _trial_fits(driver_node, spec)):
            raise GicError(
                f"search.storage_path = {storage}: a folder of this machine, but the trials run on other nodes "
                f"of the Ray cluster ({len(nodes)} nodes), which cannot write their checkpoints there; use a URI "
                f"that every node reaches (s3://BUCKET/PATH, gs://...), or set search.shared_filesystem: true if "
                f"{storage} is a shared filesystem mounted at the same path on every node")
        return

    root = ExperimentFolder(parent(experiment_path))
    name, token = f".gic-probe-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    shown = storage.partition("?")[0]

    def write_and_read() -> None:
        root.write_text(name, token)
        back = root.read_text(name)
        if back != token:
            raise OSError(f"wrote a probe file but read back {back!r}")

    try:
        _with_timeout(write_and_read, timeout_s, f"search.storage_path = {shown}")
    except GicError:
        raise
    except Exception as err:  # noqa: BLE001 - OSError, pyarrow's errors, credentials: one line
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise GicError(f"search.storage_path = {shown}: cannot write there from the driver ({first})") from None
    try:
        _check_nodes_read(root.location, name, token, nodes, shown)
    finally:
        try:
            _with_timeout(lambda: root.remove(name), timeout_s, "removing the storage probe")
        except Exception:  # noqa: BLE001 - a leftover probe file of a few bytes is harmless
            pass
    echo(f"storage {shown}: written from the driver, read back on {len(nodes)} node(s)")


def _check_nodes_read(location: str, name: str, token: str, nodes: list[dict[str, Any]], shown: str) -> None:
    """Each node (a 0-CPU task pinned to it) reads the probe the driver wrote."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = _driver_node_id()
    others = [n for n in nodes if n["NodeID"] != here]
    if not others:
        return
    task = ray.remote(num_cpus=0, max_retries=0)(_probe_read)
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(location, name): n for n in others}
    ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=NODE_TIMEOUT_S)
    if pending:
        node = refs[pending[0]]
        raise GicError(f"search.storage_path = {shown}: node {node['NodeManagerAddress']} did not answer a read "
                       f"within {NODE_TIMEOUT_S:g} s")
    for ref in ready:
        node = refs[ref]
        try:
            back = ray.get(ref)
        except ray.exceptions.RayError as err:
            back = f"error: {str(err).strip().splitlines()[-1][:200]}"
        if back != token:
            why = back if isinstance(back, str) and back.startswith("error:") else "the file is not there"
            raise GicError(f"search.storage_path = {shown}: node {node['NodeManagerAddress']} cannot read what the "
                           f"driver wrote there ({why.removeprefix('error: ')}); give every node access (credentials, "
                           "network) to it")


# ---------------------------------------------------------------------------------------------- GPUs
def _gpu_totals() -> list[int] | str:
    """Total memory (MB) of every GPU of this node from NVML, or the error text (a Ray task)."""
    try:
        from tune.trainable import _nvml

        nvml = _nvml()
        nvml.nvmlInit()
        try:
            return [int(nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(i)).total // 2**20)
                    for i in range(nvml.nvmlDeviceGetCount())]
        finally:
            nvml.nvmlShutdown()
    except Exception as err:  # noqa: BLE001 - NVMLError, no libnvidia-ml: reported by the driver
        return f"{type(err).__name__}: {err}"


def gpu_memory_by_node() -> dict[str, list[int] | str]:
    """{node address: GPU totals in MB, or NVML's error} for every alive node with GPUs."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in _alive_nodes() if float(n.get("Resources", {}).get("GPU", 0)) > 0]
    if not nodes:
        return {}
    task = ray.remote(num_cpus=0, num_gpus=0, max_retries=0)(_gpu_totals)
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote():
            n["NodeManagerAddress"] for n in nodes}
    ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=NODE_TIMEOUT_S)
    out: dict[str, list[int] | str] = {refs[ref]: "no answer" for ref in pending}
    for ref in ready:
        try:
            out[refs[ref]] = ray.get(ref)
        except ray.exceptions.RayError as err:
            out[refs[ref]] = str(err).strip().splitlines()[-1][:200]
    return out


def check_gpu_share(spec, totals: dict[str, list[int] | str] | None = None) -> None:
    """Each GPU node can read its GPUs' memory, and a trial's share of the smallest leaves a memory cap
    of at least 256 MB after the margin (tune.config.gpu_memory_cap_mb).

    Raises:
        GicError: naming the node (NVML failed) or the share (ConfigError: too small).
    """
    from tune.config import gpu_memory_cap_mb

    r = spec.search.resources_per_trial
    if not 0 < r.gpu < 1:
        return
    totals = gpu_memory_by_node() if totals is None else totals
    for node, value in sorted(totals.items()):
        if isinstance(value, str) or not value:
            raise GicError(f"search.resources_per_trial.gpu = {r.gpu:g}: node {node} has GPUs but NVML cannot read "
                           f"their memory ({value or 'no GPU listed'}), so the trials sharing a GPU there could not "
                           "cap their memory; fix the NVIDIA driver there, or give each trial a whole GPU (gpu: 1)")
        try:
            gpu_memory_cap_mb(r.gpu, min(value), r.gpu_memory_margin_mb)
        except ConfigError as err:
            raise ConfigError(f"{err} (node {node})") from None



# ------------------------------------------------------------------------------- resources, all of it
def check_resources(spec, owns_ray: bool, echo: Callable[[str], None] = print) -> None:
    """Refuse a trial that the cluster can never place, instead of waiting for it forever.

    On a local Ray (started here) the resources are all there is: an error. A cluster may grow
    (autoscaler), so there it is a warning.

    Raises:
        GicError: a local Ray with fewer CPUs or GPUs than one trial asks for.
    """
    import ray

    need = spec.search.resources_per_trial
    have = ray.cluster_resources()
    for key, wanted, label in (("GPU", need.gpu, "gpu"), ("CPU", need.cpu, "cpu")):
        available = float(have.get(key, 0))
        if wanted > 0 and wanted > available + 1e-9:
            text = (f"search.resources_per_trial.{label} = {wanted:g} but the Ray cluster has {available:g} {key}(s); "
                    + ("set it to 0 to train on CPUs" if key == "GPU" else f"use at most {available:g}"))
            if owns_ray:
                raise GicError(text)
            echo(f"warning: {text} (waiting for the cluster to grow)")


def preflight(spec, path: str, owns_ray: bool, echo: Callable[[str], None] = print) -> None:
    """Every check that needs Ray, once it runs and before any trial: resources a trial can get, storage
    every node can write, a GPU share with room for a memory cap. (The address was checked by
    tune.ray_start.init_ray; the base weights are checked where the driver resolves them.)"""
    check_resources(spec, owns_ray, echo)
    check_storage(spec, path, echo)
    check_gpu_share(spec)
