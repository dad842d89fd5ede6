"""Faults injected into real search trials: a wrapping trainable, for the fault and reliability tests.

    with inject_faults(once_at_epoch=2):                          # in this process
        summary = run_search(spec, ...)                           # real Ray, real trials, one crash each
    python tests/faults.py --always-at 1 --failing-trials 2 --slots DIR -- run --config search.yaml

The product knows nothing of this. `inject_faults` replaces the trial function the driver hands to
Ray (`tune.search.run_trial`, looked up when the search builds its trainable) by a wrapper around
it. In the trial's worker the wrapper lets `tune.trainable.run_trial` train as usual and raises in
place of `ray.tune.report` at the chosen epoch: the epoch's result and checkpoint never reach Ray,
as when the trainer crashes in that epoch. Ray then retries the trial from its last checkpoint
(`search.max_failures`), or records it errored.

- `once_at_epoch`: a trial that did not start from a checkpoint raises at this epoch; its retry
  (from a checkpoint) does not.
- `always_at_epoch`: the first `failing_trials` trials to start raise at this epoch on every
  attempt. Which trials those are is kept in slot files in `slots` (a folder on this machine that
  every worker sees), so a retried trial stays designated.
- `hold_at_epoch`: the first `failing_trials` trials to reach this epoch (not from a checkpoint)
  wait before reporting it until the file `release` appears in `slots` (at most HOLD_S): such a
  trial is then running, with the checkpoints of its earlier epochs recorded, for as long as a test
  needs (to kill the driver then, say). A trial ASHA stops before the epoch is never held.

The wrapper is pickled by value (Ray's cloudpickle), so workers need not import this module.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

FAULT = "injected failure at epoch {epoch} (tests/faults.py: {kind})"
HOLD_S = 600.0


def faulty(run: Callable, once_at_epoch: int | None = None, always_at_epoch: int | None = None,
           failing_trials: int = 1, slots: str | Path | None = None, hold_at_epoch: int | None = None) -> Callable:
    """A trial function that runs `run` (tune.trainable.run_trial) and raises (or waits) at the planned epoch."""
    slots = str(slots or tempfile.mkdtemp(prefix="gic-fault-slots-"))

    def run_trial(config: dict[str, Any], **kwargs: Any) -> None:
        from ray import tune

        restored = tune.get_checkpoint() is not None
        always = always_at_epoch if always_at_epoch and _designated(slots, failing_trials) else None
        hold = hold_at_epoch if not restored else None
        report = tune.report

        def report_or_fail(result: dict[str, Any], *args: Any, **more: Any) -> None:
            epoch = int(result["epoch"])
            if once_at_epoch and not restored and epoch == once_at_epoch:
                raise RuntimeError(FAULT.format(epoch=epoch, kind="once"))
            if always and epoch == always:
                raise RuntimeError(FAULT.format(epoch=epoch, kind="always"))
            if hold and epoch == hold and _designated(slots, failing_trials):
                import time

                until = time.monotonic() + HOLD_S
                while time.monotonic() < until and not Path(slots, "release").exists():
                    time.sleep(0.2)
            report(result, *args, **more)

        tune.report = report_or_fail
        try:
            run(config, **kwargs)
        finally:
            tune.report = report

    return run_trial


def _designated(slots: str, failing_trials: int) -> bool:
    """True for the first `failing_trials` trials to start; a retried trial finds its own slot."""
    from ray import tune

    folder = Path(slots)
    folder.mkdir(parents=True, exist_ok=True)
    trial_id = tune.get_context().get_trial_id()
    paths = [folder / f"slot-{i}" for i in range(failing_trials)]
    if any(p.is_file() and p.read_text() == trial_id for p in paths):
        return True
    for path in paths:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as f:
            f.write(trial_id)
        return True
    return False


@contextlib.contextmanager
def inject_faults(**plan: Any) -> Iterator[None]:
    """Searches started in this block run their trials through `faulty(run_trial, **plan)`."""
    from ray import cloudpickle  # Ray's own copy pickles the trainable

    import tune.search
    from tune.trainable import run_trial

    module = sys.modules[__name__]
    if module.__name__ != "__main__":
        cloudpickle.register_pickle_by_value(module)
    saved = tune.search.run_trial
    tune.search.run_trial = faulty(run_trial, **plan)
    try:
        yield
    finally:
        tune.search.run_trial = saved
        if module.__name__ != "__main__":
            cloudpickle.unregister_pickle_by_value(module)


def main(argv: list[str]) -> int:
    """`python tests/faults.py [--once-at N] [--always-at N] [--hold-at N] [--failing-trials K] [--slots DIR] -- ARGS`:
    `gic-tune ARGS` with faults injected; its exit code."""
    import argparse

    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="faults.py")
    parser.add_argument("--once-at", dest="once_at_epoch", type=int)
    parser.add_argument("--always-at", dest="always_at_epoch", type=int)
    parser.add_argument("--hold-at", dest="hold_at_epoch", type=int)
    parser.add_argument("--failing-trials", type=int, default=1)
    parser.add_argument("--slots")
    plan = vars(parser.parse_args(argv[:split]))
    from tune.cli import main as gic_tune

    with inject_faults(**plan):
        try:
            gic_tune.main(argv[split + 1:], prog_name="gic-tune", standalone_mode=True)
        except SystemExit as done:
            return int(done.code or 0) if not isinstance(done.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
