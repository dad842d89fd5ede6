"""A real multi-node Ray cluster on one machine, and an S3 server, for the cluster tests.

    with S3Server() as s3, RayNodes(hidden=[results, cache], env=s3.env) as nodes:
        nodes.start_head(num_cpus=0)            # `ray start --head`, token authentication on
        nodes.add_worker(num_cpus=1)            # `ray start --address`, in its own mount namespace
        nodes.kill_worker(0)                    # SIGKILL every process of that node
        uri = s3.uri("gic")                     # s3://bucket/gic?endpoint_override=...&scheme=http

Every node is its own `ray start --block` process. A worker node runs under `unshare --mount` with a
private tmpfs over each `hidden` folder: it cannot see the head's results or caches, as a worker
machine of a real cluster cannot (needs root; `available()` says why not). The head and its nodes use
their own Ray temp folder and token, so nothing here touches /tmp/ray or ~/.ray of the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def available() -> str | None:
    """None when this machine can run the harness, else why not (for pytest.skip)."""
    if os.geteuid() != 0:
        return "needs root (unshare --mount with a private tmpfs per worker node)"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    try:
        import moto.server  # noqa: F401
        import flask  # noqa: F401
    except ImportError:
        return "needs moto's server mode: pip install 'moto[server]'"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs tmpfs /mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare --mount does not work here: {probe.stderr.strip()[:200]}"
    return None


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every process below it (a node: ray start, raylet, its workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


class S3Server:
    """moto's S3 server on 127.0.0.1 (a subprocess) with one bucket."""

    def __init__(self, log_dir: str | Path):
        self.port = free_port()
        self.bucket = f"gic-{uuid.uuid4().hex[:8]}"
        self.log = open(Path(log_dir, "moto.log"), "w")
        self.env = dict(S3_ENV)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "S3Server":
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        wait_port(self.port)
        self.filesystem().create_dir(self.bucket)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    @property
    def query(self) -> str:
        return f"endpoint_override=127.0.0.1:{self.port}&scheme=http&region=us-east-1"

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}?{self.query}"

    def filesystem(self):
        import pyarrow.fs

        return pyarrow.fs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http", region="us-east-1",
                                       access_key="testing", secret_key="testing", allow_bucket_creation=True)

    def download(self, prefix: str, dest: str | Path) -> Path:
        """Copy `s3://bucket/prefix` to a local folder (what `aws s3 sync` does for a user)."""
        import pyarrow.fs

        Path(dest).mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(f"{self.bucket}/{prefix}", str(dest), source_filesystem=self.filesystem(),
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        return Path(dest)


class RayNodes:
    """A head and worker nodes, each a `ray start --block` process; see the module docstring."""

    def __init__(self, hidden: list[str | Path] = (), env: dict[str, str] | None = None):
        self.hidden = [str(Path(p).resolve()) for p in hidden]
        # A short folder: Ray's socket paths live below it (Unix sockets allow ~107 characters).
        self.temp_dir = tempfile.mkdtemp(prefix="gicray-", dir="/tmp")
        self.port = free_port()
        token = Path(self.temp_dir, "auth_token")
        token.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
        token.chmod(0o600)
        self.env = {**os.environ, **(env or {}), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        self.head: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen | None] = []
        self.logs: list = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _log(self, name: str):
        f = open(Path(self.temp_dir, f"{name}.log"), "w")
        self.logs.append(f)
        return f

    def start_head(self, num_cpus: int = 0) -> None:
        log = self._log("head")
        self.head = subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--port={self.port}", "--node-ip-address=127.0.0.1",
             f"--num-cpus={num_cpus}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
             f"--temp-dir={self.temp_dir}"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        wait_port(self.port, timeout=60)

    def add_worker(self, num_cpus: int = 1, resources: str | None = None) -> int:
        """Start a worker node that cannot see the hidden folders; returns its index."""
        mounts = "".join(f"mount -t tmpfs -o size=64m tmpfs '{p}' && " for p in self.hidden if Path(p).exists())
        # Its own temp folder (sockets, logs): two raylets started at once on one host would otherwise
        # race for the same socket names.
        own = Path(self.temp_dir, f"w{len(self.workers)}")
        own.mkdir()
        cmd = (f"{mounts}exec '{RAY}' start --block --address={self.address} --node-ip-address=127.0.0.1 "
               f"--num-cpus={num_cpus} --num-gpus=0 --disable-usage-stats --temp-dir={own}")
        if resources:
            cmd += f" --resources='{resources}'"
        log = self._log(f"worker{len(self.workers)}")
        proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", cmd],
                                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.workers.append(proc)
        return len(self.workers) - 1

    def wait_for_nodes(self, count: int, timeout: float = 90.0) -> None:
        """Wait until `count` nodes are alive (asked in a subprocess: this process stays Ray-free)."""
        code = ("import ray,time,sys\nray.init(address=sys.argv[1], log_to_driver=False)\n"
                "t=time.time()+float(sys.argv[3])\n"
                "while sum(n['Alive'] for n in ray.nodes())<int(sys.argv[2]) and time.time()<t: time.sleep(0.5)\n"
                "sys.exit(0 if sum(n['Alive'] for n in ray.nodes())>=int(sys.argv[2]) else 1)")
        run = subprocess.run([sys.executable, "-c", code, self.address, str(count), str(timeout)],
                             env=self.env, capture_output=True, text=True, timeout=timeout + 60)
        if run.returncode != 0:
            raise RuntimeError(f"{count} Ray nodes not alive after {timeout:.0f} s: {run.stderr[-2000:]}\n"
                               + self.log_tail())

    def kill_worker(self, index: int) -> None:
        proc = self.workers[index]
        if proc is not None:
            kill_tree(proc.pid)
            proc.wait()
            self.workers[index] = None

    def log_tail(self, chars: int = 3000) -> str:
        text = []
        for f in self.logs:
            f.flush()
            text.append(f"--- {Path(f.name).name}\n{Path(f.name).read_text()[-chars:]}")
        return "\n".join(text)

    def __enter__(self) -> "RayNodes":
        return self

    def __exit__(self, *exc) -> None:
        for i in range(len(self.workers)):
            self.kill_worker(i)
        if self.head is not None:
            kill_tree(self.head.pid)
            self.head.wait()
        for f in self.logs:
            f.close()
        if not os.environ.get("GIC_KEEP_RAY_TMP"):
            shutil.rmtree(self.temp_dir, ignore_errors=True)
