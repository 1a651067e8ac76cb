"""Run the engine from the command line: one process, or a torchrun group of N.

Shared by ``rs-search train`` (:mod:`rs_search.cli.train_cmd`) and
``torchrun -m rs_search.train`` (:mod:`rs_search.train.__main__`): load the candidate file,
pick the output folder, turn SIGTERM into a checkpoint-and-stop, train, print the summary.

``--nproc N`` starts the group with torchrun's own launcher
(``torch.distributed.launcher.api.elastic_launch``, the function the ``torchrun`` command
calls; standalone rendezvous on a free local port). Calling it directly, rather than the
``torchrun`` command, gives back each worker's exit status and one-line error, so a NaN in a
group still exits 3 with one line instead of torchrun's exit 1 and its traceback report.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from rs_search.errors import RsSearchError, SpecError
from rs_search.specs import Candidate

if TYPE_CHECKING:
    from rs_search.train.trainer import RunOptions

__all__ = [
    "ERROR_FILE_ENV",
    "LAUNCHED_ENV",
    "configure_logging",
    "default_out_dir",
    "launch_group",
    "load_candidate",
    "run_local",
    "summary_line",
    "write_error_file",
]

LAUNCHED_ENV = "RS_SEARCH_LAUNCHED"  # set for workers of ``--nproc``: the launcher reports errors
ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"  # torchrun gives every worker one


class _StderrLines(logging.Handler):
    """One plain line per message on the current ``sys.stderr`` (looked up at each message, so
    a redirected or captured stderr gets them too)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def configure_logging() -> None:
    """Engine messages (resume, corrupt checkpoint) as plain lines on stderr."""
    logger = logging.getLogger("rs_search.train")
    if not any(isinstance(h, _StderrLines) for h in logger.handlers):
        logger.addHandler(_StderrLines())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def load_candidate(config: Path, *, epochs: int | None = None) -> Candidate:
    """The candidate YAML, with ``recipe.epochs`` replaced by ``epochs`` when given. Every
    SpecError names the file (the spec's own range checks do not know it)."""
    from rs_search.train.engine import with_epochs

    try:
        candidate = Candidate.from_yaml_file(config)
        return with_epochs(candidate, epochs) if epochs is not None else candidate
    except SpecError as exc:
        if str(config) in str(exc):
            raise
        where = f"{config} (with --epochs {epochs})" if epochs is not None else str(config)
        raise SpecError(f"{where}: {exc}") from None


def default_out_dir(config: Path, candidate: Candidate) -> Path:
    """``runs/<config stem>-<candidate key[:8]>``: the same config finds its run again."""
    return Path("runs") / f"{config.stem}-{candidate.key()[:8]}"


def summary_line(result: object) -> str:
    """One line for the end of a run (a ``TrainResult``)."""
    from rs_search.train.engine import TrainResult

    assert isinstance(result, TrainResult)
    epochs = result.candidate.recipe.epochs
    if not result.curve:
        return f"nothing trained (0/{epochs} epochs)"
    last = result.curve[-1]
    best = max(result.curve, key=lambda m: m.val_top1)
    seconds = sum(m.epoch_seconds for m in result.curve)
    ema = result.candidate.recipe.ema_decay > 0
    which = f"EMA; raw {last.val_top1_raw:.2f}%" if ema else "raw weights"
    state = "stopped early at" if result.stopped_early else "done:"
    train = f"train top-1 {last.train_top1:.2f}%"
    if last.train_eval_top1 is not None:
        train += f" ({last.train_eval_top1:.2f}% in eval mode)"
    where = f"; metrics in {result.out_dir / 'metrics.json'}" if result.out_dir is not None else ""
    return (
        f"{state} {result.epochs_done}/{epochs} epochs, val top-1 {last.val_top1:.2f}% ({which}), "
        f"best {best.val_top1:.2f}% at epoch {best.epoch}, {train}, "
        f"{last.images_per_s:.1f} img/s, {seconds:.0f} s trained{where}"
    )


class _SigtermFlag:
    """SIGTERM (a scheduler reclaiming the machine, torchrun stopping the group) sets a flag the
    engine polls: it checkpoints mid-epoch and stops instead of dying."""

    def __init__(self) -> None:
        self.seen = False
        self.previous: object = None

    def __enter__(self) -> _SigtermFlag:
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.seen = True

    def __call__(self) -> bool:
        return self.seen

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)  # type: ignore[arg-type]


def run_local(config: Path, options: RunOptions, *, epochs: int | None = None) -> object:
    """Train the candidate file ``config`` (with ``recipe.epochs`` replaced by ``epochs`` when
    given) in this process, joining the torch.distributed group when there is one; print the
    summary on rank 0 and return the ``TrainResult``. ``options.out_dir`` None means
    :func:`default_out_dir`; SIGTERM checkpoints and stops (``should_stop``)."""
    from rs_search.train.distributed import context
    from rs_search.train.engine import train

    candidate = load_candidate(config, epochs=epochs)
    if options.out_dir is None:
        options = replace(options, out_dir=default_out_dir(config, candidate))
    with _SigtermFlag() as sigterm:
        result = train(candidate, options, should_stop=sigterm)
    if context().is_main:
        print(summary_line(result), flush=True)
    return result


def write_error_file(message: str) -> None:
    """Leave the one-line error where torchrun's launcher reads it (``ProcessFailure.message``)."""
    path = os.environ.get(ERROR_FILE_ENV)
    if path:
        with open(path, "w") as fh:
            json.dump({"message": message, "timestamp": int(time.time())}, fh)


def launch_group(nproc: int, worker_args: list[str]) -> tuple[int, str | None]:
    """Run ``python -m rs_search.train *worker_args`` as a torchrun group of ``nproc`` local
    processes. Returns (exit status, one-line error or None) of the first worker that failed."""
    if nproc < 1:
        raise RsSearchError(f"--nproc: {nproc} must be >= 1")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"rs-search-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # torchrun --standalone: a free port, no clash with other runs
        max_restarts=0,
        monitor_interval=0.5,
    )
    quiet = logging.getLogger("torch.distributed.elastic")
    level = quiet.level
    quiet.setLevel(
        logging.CRITICAL
    )  # its failure report is a multi-line traceback; we print one line
    os.environ[LAUNCHED_ENV] = "1"
    if nproc > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "rs_search.train", *worker_args)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        if failure.exitcode < 0:
            return 1, f"worker {rank} was killed by {failure.signal_name()}"
        message: str | None = failure.message if isinstance(failure.message, str) else None
        if message and message.startswith("To enable traceback"):
            message = None
        return failure.exitcode, message
    finally:
        os.environ.pop(LAUNCHED_ENV, None)
        quiet.setLevel(level)
    return 0, None
