"""Ray in the driver: starting or joining it, and where its own notices go.

    with RayNotices(experiment_folder, verbose=False) as notices:   # Ray's notices -> <experiment>/ray.log
        owns_ray = notices.start(init_ray, address)                  # a local Ray, or a cluster
        ...
        notices.closing()                                            # before ray.shutdown

Ray prints notices of its own into a search's output: the token-authentication warning at every
start, "may be a performance bottleneck" warnings, autoscaler and raylet lines. A user can do
nothing about them and they split the progress lines, so during a search they go to `ray.log` in
the experiment folder; errors (log records at ERROR and above, a trial's own error lines, the
raylet's error messages such as a worker killed for memory) still reach the terminal.
`gic-tune run --verbose` (or GIC_TUNE_VERBOSE=1) shows everything, at INFO, as Ray prints it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from gic.errors import GicError

from tune.experiment import RAY_LOG, ExperimentFolder

# Ray's log line format (ray._private.log): "2026-01-01 10:00:00,123\tWARNING file.py:85 -- text"
_RAY_NOTICE = re.compile(r"^\S+ \S+\s+(DEBUG|INFO|WARNING) \S+:\d+ -- ")


def verbose_from_env() -> bool:
    """GIC_TUNE_VERBOSE set to anything but "" or "0"."""
    return os.environ.get("GIC_TUNE_VERBOSE", "") not in ("", "0")


class _DropPythonApiAdvice(logging.Filter):
    """Ray's end-of-run advice is for Python users (`Tuner.restore(path=...)`) or repeats what the
    summary says (`Trials did not complete`); a command-line user gets `--resume` from us instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("Tuner.restore(" in text or text.startswith("Trials did not complete"))


def quiet_ray_advice() -> None:
    """Drop Ray Tune's end-of-run advice for Python users (see _DropPythonApiAdvice); once per process."""
    target = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _DropPythonApiAdvice) for f in target.filters):
        target.addFilter(_DropPythonApiAdvice())


def init_ray(address: str | None, num_cpus: int | None = None, verbose: bool | None = None) -> bool:
    """Join a cluster (`auto` or host:port), or start a local Ray without its dashboard.

    Without an address this always starts a new local Ray (`address="local"`): never the cluster that
    an earlier `ray start` on this machine recorded in /tmp/ray/ray_current_cluster, or RAY_ADDRESS
    (a plain ray.init() would join that cluster when it lives, and hang on its dead address when it
    is gone). With one, something must answer there within seconds (tune.preflight.check_address).

    Workers' output reaches this process's (log_to_driver): an error or a warning printed in a
    trial is seen where the search runs. The dashboard hosts Ray's job API, which runs arbitrary
    code for whoever reaches it: a local search does not start it. Ray 2.60's core ports (GCS,
    raylet, object manager) listen on every interface whatever the node IP, so they are guarded by
    Ray's token authentication (a local ray.init() turns it on in 2.60; `ray start` only with
    RAY_AUTH_MODE=token, see configs/cluster/) and, on a shared network, must sit behind a firewall.

    Args:
        address: None or "local" for a new local Ray, else `auto` or host:port.
        num_cpus: CPUs of a local Ray (default: all).
        verbose: Ray's and its workers' logs at INFO, not WARNING (default: GIC_TUNE_VERBOSE).

    Returns:
        True when this call started Ray (the caller shuts it down).

    Raises:
        GicError: the address does not answer, or the cluster refuses this driver (authentication).
    """
    import ray

    if ray.is_initialized():
        return False
    # With workers' output forwarded, Ray's tqdm support would replace builtins.print in this process
    # on the first line a worker prints (and a search's echo=print could no longer be pickled).
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    quiet = not (verbose_from_env() if verbose is None else verbose)
    # Workers log at WARNING unless verbose: errors and warnings, not Ray's per-checkpoint notes.
    common = dict(log_to_driver=True, logging_level=logging.WARNING if quiet else logging.INFO,
                  logging_config=ray.LoggingConfig(log_level="WARNING" if quiet else "INFO"), include_dashboard=False)
    if not address or address == "local":
        ray.init(address="local", num_cpus=num_cpus, **common)
        return True
    from tune.preflight import check_address

    hostport = check_address(address)
    try:
        ray.init(address=address, **common)
    except (ConnectionError, ray.exceptions.AuthenticationError) as err:
        text = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                "; a cluster with token authentication needs RAY_AUTH_MODE=token and its token here "
                "(~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)")
        raise GicError(f"--address {address}: the Ray cluster at {hostport} refused this driver ({text}){hint}") from None
    return True


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


class _Into:
    """A text stream that writes into RayNotices' file, and with `verbose` to the real stderr too
    (sys.stderr while Ray starts). Its file descriptor is the real stderr's: what needs one
    (faulthandler) writes there."""

    def __init__(self, notices: "RayNotices", real: Any):
        self.notices = notices
        self.real = real

    def fileno(self) -> int:
        return self.real.fileno()

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self.notices._write(text)
        if self.notices.verbose:
            self.real.write(text)
        return len(text)

    def flush(self) -> None:
        pass


class RayNotices:
    """Ray's own notices go to `ray.log` in the experiment folder while the block runs (see the
    module docstring); with `verbose` they also reach the terminal, as Ray prints them.

    `start(init_ray, ...)` starts (or joins) Ray with its notices routed:
    - while Ray starts, what Ray writes to sys.stderr (the token-authentication notice) goes to the
      file: the log handlers ray.init installs are bound to that stream, and are then turned to the
      terminal for errors only (all records with `verbose`); the file gets every record of Python's
      "ray" logger (the driver's Ray and Ray Tune) at the level Ray logs at;
    - the lines Ray forwards from its processes (log_to_driver) are all written to the file; on the
      terminal, only a trial's own output that is not one of Ray's log lines (its errors, its own
      warnings), none of the autoscaler's or the raylet's.
    `closing()` (before ray.shutdown) sends what Ray's processes print while they are stopped to the
    file only. The file is appended to, so a resumed search adds to it. On a URI the file is kept on
    this machine while the block runs and written into the experiment folder at its end.
    """

    HANDLER = "gic_ray_log"  # our entry in Ray's dispatcher of forwarded lines

    def __init__(self, folder: Any, verbose: bool = False):
        self.folder = ExperimentFolder(folder)
        self.verbose = verbose
        self.path: Path | None = None
        self._lock = threading.Lock()
        self._file = None
        self._handler: logging.Handler | None = None
        self._filtered: list[logging.Handler] = []
        self._restore_forwarding = None
        self._closing = False

    def __enter__(self) -> "RayNotices":
        if self.folder.local is not None:
            self.folder.local.mkdir(parents=True, exist_ok=True)
            self.path = self.folder.local / RAY_LOG
        else:
            self.path = Path(tempfile.mkdtemp(prefix="gic-ray-log-")) / RAY_LOG
        self._file = open(self.path, "a", encoding="utf-8", buffering=1)
        self._handler = logging.StreamHandler(self._file)
        self._handler.setFormatter(logging.Formatter("%(asctime)s\t%(levelname)s %(name)s -- %(message)s"))
        return self

    def start(self, init: Callable[..., bool], *args: Any, **kwargs: Any) -> bool:
        """`init(*args, **kwargs)` (tune.ray_start.init_ray) with Ray's start-up notices in the file,
        then Ray's log records and forwarded lines routed; returns what init returns."""
        import sys

        real = sys.stderr
        into = _Into(self, real)
        sys.stderr = into
        try:
            started = init(*args, **kwargs)
        finally:
            sys.stderr = real
            self._route_records(into)
        self._route_forwarded()
        return started

    def closing(self) -> None:
        """From now on, lines Ray forwards from its processes go to the file only (Ray is stopping)."""
        self._closing = True

    def _route_records(self, into: _Into | None) -> None:
        """Our file handler on the "ray" logger; Ray's stream handlers to the terminal (the real
        stderr where ray.init bound them to `into`), errors only unless verbose."""
        import sys

        ray_logger = logging.getLogger("ray")
        for logger in (ray_logger, logging.getLogger()):
            for handler in logger.handlers:
                if into is not None and isinstance(handler, logging.StreamHandler) and handler.stream is into:
                    handler.setStream(sys.stderr)
        if self._handler not in ray_logger.handlers:
            ray_logger.addHandler(self._handler)
        if self.verbose:
            return
        for handler in ray_logger.handlers:
            if handler is not self._handler and isinstance(handler, logging.StreamHandler) \
                    and not any(isinstance(f, _ErrorsOnly) for f in handler.filters):
                handler.addFilter(_ErrorsOnly())
                self._filtered.append(handler)

    def _route_forwarded(self) -> None:
        """Route the lines Ray forwards from its processes through the file too.

        Ray 2.60 hands them to handlers of `ray._private.worker.global_worker_stdstream_dispatcher`
        (its own, "ray_print_logs", prints them), and keeps only the autoscaler's events
        (`filter_autoscaler_events`): the private Ray names this module reads. Where they are missing
        (another Ray) the lines are printed as Ray prints them.
        """
        try:
            from ray._private import worker as ray_worker

            dispatcher = ray_worker.global_worker_stdstream_dispatcher
            events = ray_worker.filter_autoscaler_events
            printer = next((h for name, h in dispatcher.handlers if name == "ray_print_logs"), None)
        except (ImportError, AttributeError):
            return
        if printer is None:  # Ray was started elsewhere without log_to_driver: nothing is forwarded
            return

        def route(data: dict[str, Any]) -> None:
            pid = data.get("pid")
            lines = list(data.get("lines", []))
            if pid == "autoscaler":
                lines = list(events(lines))
            who = data.get("actor_name") or data.get("task_name") or ""
            self._write("".join(f"({who + ' ' if who else ''}pid={pid}) {line}\n" for line in lines))
            if self._closing:
                return
            if self.verbose:
                printer(data)
                return
            if pid in ("autoscaler", "raylet") or any("in sigterm_handler" in line for line in lines):
                return  # the autoscaler's and raylet's notes; a worker that Ray stops, telling how
            shown = [line for line in lines if not _RAY_NOTICE.match(line)]
            if shown:
                printer({**data, "lines": shown})

        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler(self.HANDLER, route)

        def restore() -> None:
            dispatcher.remove_handler(self.HANDLER)
            import ray

            if ray.is_initialized() and not any(name == "ray_print_logs" for name, _ in dispatcher.handlers):
                dispatcher.add_handler("ray_print_logs", printer)

        self._restore_forwarding = restore

    def _write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            if self._file is not None:
                self._file.write(text)

    def __exit__(self, *exc: Any) -> None:
        if self._restore_forwarding is not None:
            self._restore_forwarding()
        logging.getLogger("ray").removeHandler(self._handler)
        for handler in self._filtered:
            for f in [f for f in handler.filters if isinstance(f, _ErrorsOnly)]:
                handler.removeFilter(f)
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        if self.folder.local is None and self.path is not None:
            try:
                before = self.folder.read_bytes(RAY_LOG) or b""
                self.folder.write_bytes(RAY_LOG, before + self.path.read_bytes())
            except Exception:  # noqa: BLE001 - the log of Ray's notices is not worth failing a search's end over
                pass
            finally:
                import shutil

                shutil.rmtree(self.path.parent, ignore_errors=True)
