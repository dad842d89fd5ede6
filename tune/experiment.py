"""An experiment's folder, on a local disk or behind a URI (s3://, gs://, file://): its files, and
the driver's record of whether a search is running and how it ended.

    folder = ExperimentFolder("s3://bucket/gic-tune/demo?endpoint_override=...")  # or "results/demo"
    folder.write_text(SEARCH_CONFIG, text)     # atomic on a disk; one whole object on an object store
    folder.read_text(TRIALS_CSV)               # None when absent
    mark_driver(folder, "running")             # at start; "finished" | "failed" | "interrupted" at the end
    driver_gone(folder)                        # True when no driver runs this experiment any more

Every file of an experiment that this project writes or reads goes through here, through pyarrow's
filesystems (what Ray's storage layer uses), so a search on a cloud URI leaves the same files as one
on a local folder: search_config.yaml, asha.json, optuna_trials.csv, warm_start.json, driver.json,
trials.csv, best_config.yaml, ray.log; and each trial's result.json (Ray's) is read here.

Ray's own experiment state says RUNNING for every trial that was running when the driver stopped,
whether it stopped cleanly (Ctrl-C) or was killed. `driver.json` tells those apart: a driver that
ended writes its end state; one that was killed leaves "running" with a process id that no longer
exists on its host. Readers then report such trials as `interrupted`, not `running`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any


# ----------------------------------------------------------------- the files of an experiment folder
# One set of names, for every reader and writer (Ray's own files, experiment_state-*.json, tuner.pkl
# and one folder per trial, sit beside them).
SEARCH_CONFIG = "search_config.yaml"  # the resolved search file, the command, versions; resumes
TRIALS_CSV = "trials.csv"  # the trial table, rewritten as trials end
BEST_CONFIG = "best_config.yaml"  # the best trial's full trainer config: `gic train --config` takes it
SCHEDULER_STATE = "asha.json"  # the scheduler's early stops, rungs and replayed trials
OPTUNA_TRIALS = "optuna_trials.csv"  # the Optuna study's trials with their states
WARM_START_FILE = "warm_start.json"  # where a warm-started search's first trials came from
STUDY_DB = "optuna_study.db"  # the study as an Optuna SQLite storage (gic-tune report)
REPORT_DIR = "report"  # gic-tune report's default output folder
RETRAIN_DIR = "retrain"  # gic-tune retrain's default output folders, one per settings
DRIVER = "driver.json"  # the driver: running, or how it ended
RESULTS = "result.json"  # Ray's, in each trial folder: one JSON line per reported result
RAY_LOG = "ray.log"  # Ray's own notices during the search (tune.ray_start.RayNotices)
END_STATES = ("finished", "failed", "interrupted")  # failed: every trial errored


# ------------------------------------------------------------ a folder on a local disk or a URI
def is_uri(location: str | Path) -> bool:
    """True for `scheme://...` (s3, gs, file, ...), False for a path on this machine."""
    return "://" in str(location)


def join(location: str | Path, *names: str) -> str:
    """`location/name/...`: a path, or a URI whose query (`?endpoint_override=...`) stays at its end."""
    if not is_uri(location):
        return str(Path(location, *names))
    base, sep, query = str(location).partition("?")
    return base.rstrip("/") + "".join(f"/{n.strip('/')}" for n in names if n) + sep + query


def parent(location: str | Path) -> str:
    """The folder (or URI) that holds `location`."""
    if not is_uri(location):
        return str(Path(location).parent)
    base, sep, query = str(location).partition("?")
    return base.rstrip("/").rsplit("/", 1)[0] + sep + query


class ExperimentFolder:
    """The files of one experiment folder, local or behind a URI (see the module docstring).

    Names are relative to the folder (`trial_x/result.json` too). Reads return None for a file that
    is not there; writes create the folders they need.
    """

    def __init__(self, location: "str | Path | ExperimentFolder"):
        if isinstance(location, ExperimentFolder):
            location = location.location
        self.is_uri = is_uri(location)
        self.location = str(location) if self.is_uri else str(Path(location).expanduser())
        self._fs = None

    def __repr__(self) -> str:
        return f"ExperimentFolder({self.location!r})"

    # -- where
    @property
    def local(self) -> Path | None:
        """The folder as a Path, for a local one; None for a URI."""
        return None if self.is_uri else Path(self.location)

    def filesystem(self):
        """(pyarrow filesystem, path of the folder on it)."""
        if self._fs is None:
            import pyarrow.fs

            if self.is_uri:
                self._fs = pyarrow.fs.FileSystem.from_uri(self.location)
            else:
                self._fs = (pyarrow.fs.LocalFileSystem(), str(Path(self.location).resolve()))
        return self._fs

    def _path(self, name: str = "") -> str:
        fs, root = self.filesystem()
        return f"{root.rstrip('/')}/{name}" if name else root

    def uri(self, name: str = "") -> str:
        """What to show a user for `name` in this folder (a path or a URI)."""
        return join(self.location, name) if name else self.location

    # -- reading
    def read_bytes(self, name: str) -> bytes | None:
        if self.local is not None:
            try:
                return Path(self.location, name).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None
        fs, _ = self.filesystem()
        try:
            with fs.open_input_stream(self._path(name)) as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as err:
            if "not found" in str(err).lower() or "does not exist" in str(err).lower():
                return None
            raise

    def read_text(self, name: str) -> str | None:
        data = self.read_bytes(name)
        return None if data is None else data.decode()

    def read_json(self, name: str) -> Any:
        """The parsed file, or None when it is absent or not JSON."""
        text = self.read_text(name)
        try:
            return None if text is None else json.loads(text)
        except ValueError:
            return None

    def exists(self, name: str = "") -> bool:
        if self.local is not None:
            return Path(self.location, name).exists()
        import pyarrow.fs

        fs, _ = self.filesystem()
        return fs.get_file_info(self._path(name)).type != pyarrow.fs.FileType.NotFound

    def is_file(self, name: str) -> bool:
        if self.local is not None:
            return Path(self.location, name).is_file()
        import pyarrow.fs

        fs, _ = self.filesystem()
        return fs.get_file_info(self._path(name)).type == pyarrow.fs.FileType.File

    def entries(self, name: str = "") -> list[tuple[str, bool, float]]:
        """(name, is a folder, modification time or 0) of what the folder (or its sub-folder) holds,
        sorted by name; [] when it does not exist."""
        if self.local is not None:
            folder = Path(self.location, name)
            if not folder.is_dir():
                return []
            out = []
            for p in folder.iterdir():
                try:
                    out.append((p.name, p.is_dir(), p.stat().st_mtime))
                except OSError:
                    continue
            return sorted(out)
        import pyarrow.fs

        fs, _ = self.filesystem()
        try:
            infos = fs.get_file_info(pyarrow.fs.FileSelector(self._path(name), allow_not_found=True))
        except OSError:
            return []
        return sorted((i.base_name, i.type == pyarrow.fs.FileType.Directory,
                       i.mtime.timestamp() if i.mtime is not None else 0.0) for i in infos)

    # -- writing
    def write_bytes(self, name: str, data: bytes) -> str:
        """Write a file: through a temporary name and a rename on a disk (a reader never sees half a
        file), as one object on an object store (whose writes are whole). Returns its uri()."""
        if self.local is not None:
            from gic.files import atomic_write_bytes

            atomic_write_bytes(Path(self.location, name), data)
            return self.uri(name)
        import pyarrow.fs

        fs, _ = self.filesystem()
        final = self._path(name)
        fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        if isinstance(fs, pyarrow.fs.LocalFileSystem):  # file:// : a real disk
            tmp = f"{final.rsplit('/', 1)[0]}/.{final.rsplit('/', 1)[1]}.tmp-{os.getpid()}"
            with fs.open_output_stream(tmp) as out:
                out.write(data)
            fs.move(tmp, final)
        else:
            with fs.open_output_stream(final) as out:
                out.write(data)
        return self.uri(name)

    def write_text(self, name: str, text: str) -> str:
        return self.write_bytes(name, text.encode())

    def write_json(self, name: str, obj: Any) -> str:
        """Strict JSON (NaN -> null), as gic.files.atomic_write_json writes it."""
        from gic.files import json_safe

        return self.write_text(name, json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False) + "\n")

    def make(self) -> None:
        """Create the folder (and its parents)."""
        fs, root = self.filesystem()
        fs.create_dir(root, recursive=True)

    def remove(self, name: str) -> None:
        """Delete a file or a sub-folder; nothing when it is not there."""
        import pyarrow.fs

        fs, _ = self.filesystem()
        path = self._path(name)
        kind = fs.get_file_info(path).type
        try:
            if kind == pyarrow.fs.FileType.Directory:
                fs.delete_dir(path)
            elif kind == pyarrow.fs.FileType.File:
                fs.delete_file(path)
        except FileNotFoundError:
            pass


# ------------------------------------------------------------------------- the driver's record
def mark_driver(folder: "str | Path | ExperimentFolder", state: str, **extra: Any) -> None:
    """Record this process as the experiment's driver in `state`, on a local folder or a URI."""
    folder = ExperimentFolder(folder)
    record = read_driver(folder) or {}
    if state == "running":
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    else:
        record["ended"] = time.time()
    record.update(state=state, **extra)
    folder.write_json(DRIVER, record)


def read_driver(folder: "str | Path | ExperimentFolder") -> dict[str, Any] | None:
    """The driver record, or None when the folder has none (an experiment from before it existed)."""
    try:
        record = ExperimentFolder(folder).read_json(DRIVER)
    except OSError:
        return None
    return record if isinstance(record, dict) else None


def driver_gone(folder: "str | Path | ExperimentFolder") -> bool:
    """True when no driver runs this experiment: it recorded an end state, or it was a process of
    this host that is no longer alive. A folder copied from another host whose record still says
    "running" is taken at its word (False), as is a folder without a record."""
    record = read_driver(folder)
    if record is None:
        return False
    if record.get("state") in END_STATES:
        return True
    if record.get("host") != socket.gethostname():
        return False
    import psutil

    try:
        process = psutil.Process(int(record["pid"]))
        # a process id can be reused: the driver's process started before it wrote its record
        return process.create_time() > float(record.get("started", 0)) + 1
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


# ------------------------------------------------------------ files on a local folder or a URI
def put_text(storage, name: str, text: str) -> None:
    """Write a file into the experiment folder of Ray's StorageContext `storage` (local or cloud)."""
    fs, root = storage.storage_filesystem, storage.experiment_fs_path
    import pyarrow.fs

    if isinstance(fs, pyarrow.fs.LocalFileSystem):  # a disk: via a temporary name and a rename
        tmp = f"{root}/.{name}.tmp-{os.getpid()}"
        with fs.open_output_stream(tmp) as out:
            out.write(text.encode())
        fs.move(tmp, f"{root}/{name}")
    else:  # an object store writes whole objects (and S3 has no rename)
        with fs.open_output_stream(f"{root}/{name}") as out:
            out.write(text.encode())


def parse_results(text: str | None) -> list[dict[str, Any]]:
    """The results in the text of a result.json, in order ([] for None; a half-written last line is
    left out)."""
    out = []
    for line in (text or "").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def trial_results(storage) -> list[dict[str, Any]]:
    """Every result a trial reported, in order, from its result.json in the storage of Ray's
    StorageContext `storage` (a local folder or a URI); [] when it has none yet."""
    fs = storage.storage_filesystem
    try:
        with fs.open_input_stream(f"{storage.trial_fs_path}/{RESULTS}") as f:
            return parse_results(f.read().decode())
    except (FileNotFoundError, OSError):
        return []


def get_text(uri: str) -> str | None:
    """A file given by its full path or URI, or None when it is not there (or cannot be read)."""
    try:
        return ExperimentFolder(parent(uri)).read_text(_name_of(uri))
    except (OSError, ValueError):
        return None


def _name_of(location: str) -> str:
    base = str(location).partition("?")[0] if is_uri(location) else str(location)
    return base.rstrip("/").rsplit("/", 1)[-1]
