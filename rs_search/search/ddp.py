"""``rs-search worker --nproc N``: every trial trains as one torchrun DDP group.

Only rank 0 talks to the study (DESIGN.md section 5: a rank that created its own trial would train
a different candidate and the collectives would hang). Rank 0 runs the ordinary worker loop; its
train launcher first broadcasts the job (candidate, data, directory, resume flag, seed) with
``torch.distributed.broadcast_object_list``, then every rank calls the engine, which runs DDP on
the group. The engine broadcasts rank 0's ``on_epoch`` answer (continue, or stop at a halving
rung) and combines SIGTERM and NaN flags over ranks, so all ranks leave a trial together. When
rank 0's loop ends it broadcasts ``None`` and every rank exits.

The group is created here with a long collective timeout: ranks other than 0 wait in a broadcast
while rank 0 measures latency or waits for a stale trial, which can take longer than the default
30 minutes. torchrun still ends the group at once if any process dies.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rs_search.errors import RsSearchError, TrialInterrupted
from rs_search.search.deps import LocalTrain
from rs_search.specs import Candidate

_TIMEOUT = datetime.timedelta(hours=6)


def launch(
    *,
    nproc: int,
    study_name: str,
    storage_url: str,
    device: str,
    artifacts: str | None,
    timeout_s: float | None,
    loader_workers: int | None = None,
    max_trials: int | None = None,
    auto_scale: bool = False,
    worker_index: int | None = None,
) -> int:
    """Run ``nproc`` ranks of this module under torchrun on this machine; returns its exit code.

    The storage URL travels in ``RS_SEARCH_STORAGE``, never on a command line (``ps`` shows
    command lines, and the URL may hold a password).
    """
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        # SIGTERM is the ranks' own business (see _forward_sigterm); torchrun keeps the others.
        "--signals-to-handle=SIGINT,SIGHUP,SIGQUIT",
        "-m",
        "rs_search.search.ddp",
        "--study",
        study_name,
        "--device",
        device,
    ]
    if artifacts:
        cmd += ["--artifacts", artifacts]
    if timeout_s is not None:
        cmd += ["--timeout", str(timeout_s)]
    if loader_workers is not None:
        cmd += ["--loader-workers", str(loader_workers)]
    if max_trials is not None:
        cmd += ["--max-trials", str(max_trials)]
    if auto_scale:
        cmd.append("--auto-scale")
    if worker_index is not None:
        cmd += ["--worker-index", str(worker_index)]
    env = {
        **os.environ,
        "RS_SEARCH_STORAGE": storage_url,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    # torchrun inherits an ignored SIGTERM (the ranks install their own handler), so a SIGTERM
    # sent to every process of the job (Slurm) does not make torchrun kill its ranks 30 s later
    # or exit 1 while they checkpoint.
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        proc = subprocess.Popen(cmd, env=env)
        signal.signal(signal.SIGTERM, lambda signum, frame: _forward_sigterm(proc.pid))
        try:
            return proc.wait()
        except KeyboardInterrupt:  # torchrun ignores the SIGTERM terminate() would send
            _forward_sigterm(proc.pid)
            return proc.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _forward_sigterm(torchrun_pid: int) -> None:
    """A SIGTERM sent to this process alone (Kubernetes signals a container's PID 1): pass it to
    the ranks, which checkpoint and hand the trial back; torchrun then sees them exit 0. Before
    the ranks exist, SIGINT makes torchrun stop the group instead."""
    ranks = [pid for pid in _children(torchrun_pid) if _runs_ddp(pid)]
    for pid in ranks:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if not ranks:
        try:
            os.kill(torchrun_pid, signal.SIGINT)
        except ProcessLookupError:
            pass


def _children(pid: int) -> list[int]:
    """Child processes of ``pid`` from /proc (torchrun starts each rank in a session of its own,
    so no process group holds them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _runs_ddp(pid: int) -> bool:
    try:
        return b"rs_search.search.ddp" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@dataclass(frozen=True, kw_only=True)
class BroadcastTrain:
    """Rank 0's train launcher: send the job to the other ranks, then train with them."""

    local: LocalTrain

    def __call__(
        self,
        candidate: Candidate,
        *,
        out_dir: Path,
        resume: bool,
        seed: int,
        on_epoch: Callable[[Any], bool],
        should_stop: Callable[[], bool],
    ) -> Any:
        _send(
            {
                "candidate": candidate.to_dict(),
                "out_dir": str(out_dir),
                "resume": resume,
                "seed": seed,
                "data": self.local.data,
            }
        )
        return self.local(
            candidate,
            out_dir=out_dir,
            resume=resume,
            seed=seed,
            on_epoch=on_epoch,
            should_stop=should_stop,
        )


def _send(message: dict[str, Any] | None) -> None:
    import torch.distributed as dist

    if message is None and not dist.is_initialized():
        return  # the goodbye after a rank's failure ended the group: nobody is listening
    dist.broadcast_object_list([message], src=0)


def _receive() -> dict[str, Any] | None:
    import torch.distributed as dist

    box: list[Any] = [None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[no-any-return]


def _init_group(device: str) -> tuple[int, int]:
    import torch
    import torch.distributed as dist

    from rs_search.devices import parse_device

    on_cuda = torch.cuda.is_available() and parse_device(device).type != "cpu"
    if on_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if on_cuda else "gloo", timeout=_TIMEOUT)
    return dist.get_rank(), dist.get_world_size()


def _follower(device: str, stop: Callable[[], bool], loader_workers: int | None) -> None:
    """Ranks > 0: train whatever rank 0 sends until it sends None."""
    while True:
        job = _receive()
        if job is None:
            return
        train = LocalTrain(data=job["data"], device=device, num_workers=loader_workers)
        try:
            train(
                Candidate.from_dict(job["candidate"]),
                out_dir=Path(job["out_dir"]),
                resume=bool(job["resume"]),
                seed=int(job["seed"]),
                on_epoch=None,
                should_stop=stop,
            )
        except (RsSearchError, TrialInterrupted):
            import torch.distributed as dist

            if not dist.is_initialized():  # a rank failed alone and the engine ended the group
                raise
            # rank 0 records the outcome; the group has left the trial together


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rs_search.search.ddp")
    parser.add_argument("--study", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--artifacts", default=None)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--loader-workers", type=int, default=None)
    parser.add_argument("--max-trials", type=int, default=None)
    parser.add_argument("--auto-scale", action="store_true")
    parser.add_argument("--worker-index", type=int, default=None)
    args = parser.parse_args(argv)

    from rs_search.env import Environment
    from rs_search.search.worker import StopFlag, run_worker

    stop = StopFlag()
    stop.install()
    rank, world = _init_group(args.device)
    from rs_search.train.distributed import leave_group

    try:
        if rank != 0:
            _follower(args.device, stop, args.loader_workers)
            return 0
        try:
            environment = Environment.from_environ()
            report = run_worker(
                study_name=args.study,
                storage=None,
                device=args.device,
                artifacts=args.artifacts,
                timeout_s=args.timeout,
                stop=stop,
                world_size=world,
                max_trials=args.max_trials,
                auto_scale=args.auto_scale,
                worker_index=args.worker_index,
                environment=environment,
                make_launcher=lambda s: BroadcastTrain(
                    local=LocalTrain(
                        data=s.data,
                        device=args.device,
                        num_workers=args.loader_workers,
                        progress=True,
                    )
                ),
                echo=lambda s: print(f"[rank 0/{world}] {s}", flush=True),
            )
        finally:
            _send(None)
        print(
            f"[rank 0/{world}] worker done: {report.reason}, {report.trials_run} trials", flush=True
        )
        return 0
    except RsSearchError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    finally:
        leave_group()


if __name__ == "__main__":
    sys.exit(main())
