"""A trial's checkpoints are deleted from the experiment's storage once the trial has ended.

A checkpoint serves two things: a retry of a crashed trial and `--resume` of an interrupted search.
Once a trial has ended (finished, stopped by ASHA, errored after its retries) neither will read it,
and nothing else does (`gic-tune retrain` trains from scratch), so keeping it only costs storage:
at unfreeze_layers 9 a phase-2 checkpoint is ~167 MB, per trial. `search.keep_checkpoints: true`
keeps them. A trial that was running when the search was interrupted keeps its checkpoints: it has
not ended, and --resume continues it from them.

When. Ray's saved experiment state (the snapshot --resume reads) can still call a trial that just
ended "running", with its latest checkpoint: a driver killed before the next snapshot would resume
it from there. So when a trial ends its older checkpoints go at once, and its latest one once a
later snapshot (which records the trial as ended) has reached the storage, or at the end of the
search, after Ray's final snapshot. Trials that had ended before a --resume go at its first step.
"""

from __future__ import annotations

import logging
import sys
import time

from ray.tune import Callback

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint_"  # Ray's checkpoint folders in a trial folder: checkpoint_000000, ...
SNAPSHOT_PREFIX = "experiment_state-"  # Ray's saved experiment state in the experiment folder
CHECK_EVERY_S = 5.0  # how often a pending trial's latest checkpoint is looked at (one listing of the folder)
ENDED = ("TERMINATED", "ERROR")


def delete_checkpoints(storage, keep_latest: bool = False) -> int:
    """Delete the checkpoint folders of the trial whose Ray StorageContext is `storage` (all of them,
    or all but the latest); returns how many."""
    import pyarrow.fs

    fs, trial_path = storage.storage_filesystem, storage.trial_fs_path
    folders = sorted(info.path for info in fs.get_file_info(pyarrow.fs.FileSelector(trial_path, allow_not_found=True))
                     if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith(CHECKPOINT_PREFIX))
    deleted = 0
    for path in folders[:-1] if keep_latest else folders:
        try:
            fs.delete_dir(path)
            deleted += 1
        except FileNotFoundError:
            pass
    return deleted


def snapshot_mtime(storage) -> float:
    """When Ray's newest experiment snapshot reached the storage (0 when there is none yet)."""
    import pyarrow.fs

    fs = storage.storage_filesystem
    infos = fs.get_file_info(pyarrow.fs.FileSelector(storage.experiment_fs_path, allow_not_found=True))
    return max((i.mtime.timestamp() for i in infos if i.base_name.startswith(SNAPSHOT_PREFIX) and i.mtime is not None),
               default=0.0)


class CheckpointSweeper(Callback):
    """Deletes an ended trial's checkpoints (see the module docstring); never stops the search."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[object, float]] = {}  # trial id -> (Trial, snapshot time when it ended)
        self.done: set[str] = set()
        self.statuses: dict[str, str] = {}  # at the last step: an interruption's cleanup ends trials without callbacks
        self.last_check = 0.0

    def _safely(self, what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - storage hiccups cost space, not the search
            log.warning("checkpoints: could not %s: %s", what, err)
            return None

    def _ended(self, trial) -> None:
        if trial.trial_id in self.done or trial.trial_id in self.pending:
            return
        self._safely(f"delete older checkpoints of trial {trial.trial_id}", delete_checkpoints, trial.storage, True)
        self.pending[trial.trial_id] = (trial, self._safely("read the snapshot time", snapshot_mtime, trial.storage)
                                        or 0.0)

    def _sweep(self, trial) -> None:
        if self._safely(f"delete the checkpoints of trial {trial.trial_id}", delete_checkpoints, trial.storage) is not None:
            self.done.add(trial.trial_id)
            self.pending.pop(trial.trial_id, None)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial)

    def on_step_end(self, iteration, trials, **info):
        first = not self.statuses
        self.statuses = {t.trial_id: t.status for t in trials}
        if first:  # a resumed search: trials that had ended are ended in the snapshot it restored from
            for trial in trials:
                if trial.status in ENDED and trial.trial_id not in self.pending:
                    self._sweep(trial)
        if not self.pending or time.monotonic() - self.last_check < CHECK_EVERY_S:
            return
        self.last_check = time.monotonic()
        trial = next(iter(self.pending.values()))[0]
        now = self._safely("read the snapshot time", snapshot_mtime, trial.storage)
        if now is None:
            return
        for trial, then in list(self.pending.values()):
            if now > then:  # a snapshot taken after the trial ended: it records it as ended
                self._sweep(trial)

    def on_experiment_end(self, trials, **info):
        if sys.exc_info()[0] is not None:
            return  # the search failed before Ray's final snapshot: keep what --resume may need
        # Ray wrote its final snapshot (and waited for it) before ending the experiment.
        for trial in trials:
            if trial.trial_id in self.pending or self.statuses.get(trial.trial_id) in ENDED:
                self._sweep(trial)
