"""Real 2-process gloo groups (issue 14): a rank that fails alone ends the group promptly with
its reason on the other rank; leaving the group is bounded when a peer never comes; a resume
reads the checkpoint on rank 0 only and broadcasts it over the CPU; an agreed refusal leaves the
group usable."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .conftest import make_imagefolder, subprocess_env

RANK_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    import torch.distributed as dist
    from rs_search.errors import RsSearchError
    from rs_search.specs import ArchSpec, Candidate, RecipeSpec
    from rs_search.train.distributed import (
        context, failures_end_the_group, init_from_env, leave_group, all_reduce_sum
    )

    scenario, folder = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    ctx = init_from_env("cpu")
    print(f"rank {ctx.rank} joined {ctx.backend} world {ctx.world_size}", flush=True)

    def report(exc):
        print(f"rank {ctx.rank} {type(exc).__name__} {exc.exit_code} {exc}", flush=True)

    if scenario == "bad-image":
        from rs_search.train.engine import RunOptions, train
        cand = Candidate(
            arch=ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=16, num_classes=3),
            recipe=RecipeSpec(epochs=2, batch_size=4, warmup_epochs=1, randaug_layers=0),
        )
        options = RunOptions(
            data=f"imagefolder:{folder}", device="cpu", num_workers=0, progress=False
        )
        try:
            train(cand, options)
            print(f"rank {ctx.rank} finished", flush=True)
        except RsSearchError as exc:
            report(exc)
        print(f"rank {ctx.rank} group up: {dist.is_initialized()}", flush=True)
    elif scenario == "leave-alone":
        if ctx.rank == 1:
            sys.stdin.readline()  # never leaves; the test closes stdin when rank 0 is done
            sys.exit(0)
        start = time.monotonic()
        leave_group(timeout_s=3)
        print(f"rank 0 left after {time.monotonic() - start:.1f} s", flush=True)
        sys.exit(0)
    elif scenario == "resume":
        from rs_search.train import checkpoint as ckpt
        key = ckpt.RunKey(candidate_key="k", data="digits", steps_per_epoch=5)
        mine = folder / f"rank{ctx.rank}"  # rank 1's folder is empty: only rank 0 can read
        if ctx.rank == 0:
            state = {**key.stamp(), "epoch": 3, "weights": torch.arange(4.0)}
            ckpt.save_checkpoint(mine, state, epoch=3)
        state = ckpt.load_for_resume(mine, key, ctx)
        print(f"rank {ctx.rank} resumed epoch {state['epoch']} weights "
              f"{state['weights'].tolist()}", flush=True)
        other = ckpt.RunKey(candidate_key="other", data="digits", steps_per_epoch=5)
        try:
            with failures_end_the_group(ctx):
                ckpt.load_for_resume(mine, other, ctx)
        except RsSearchError as exc:
            report(exc)
        total = all_reduce_sum(torch.tensor([float(ctx.rank + 1)]), ctx)  # the group still works
        print(f"rank {ctx.rank} sum {total.item():g}", flush=True)
    start = time.monotonic()
    leave_group()
    print(f"rank {ctx.rank} left after {time.monotonic() - start:.1f} s", flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_group(
    scenario: str, folder: Path, *, script: str = RANK_SCRIPT
) -> list[subprocess.Popen[str]]:
    port = str(_free_port())
    procs = []
    for rank in range(2):
        env = subprocess_env()
        env.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_WORLD_SIZE="2",
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script, scenario, str(folder)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def finish(procs: list[subprocess.Popen[str]], timeout: float) -> list[str]:
    """Each rank's stdout; a rank still running after ``timeout`` fails the test (and is
    killed), which is what a hang in a collective looks like."""
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return outputs


@pytest.mark.slow
def test_a_rank_that_fails_alone_ends_the_group_with_its_reason(tmp_path: Path) -> None:
    """Rank 1's validation shard (images 1, 3, 5) holds an unreadable file; rank 0's does not.
    Rank 1 raises DataError in its validation pass while rank 0 waits for it in the all-reduce
    of the results: before, rank 0 waited there until the group's timeout (30 minutes here, 6
    hours in a search worker's group); now it raises RankFailed with rank 1's reason at once."""
    root = make_imagefolder(tmp_path / "pets")
    bad = root / "val" / "cat" / "cat_1.png"  # val index 1, sorted by class then file name
    bad.write_bytes(b"not an image")
    start = time.monotonic()
    rank0, rank1 = finish(start_group("bad-image", root), timeout=240)
    assert f"rank 1 DataError 2 {bad}: cannot read image" in rank1
    assert f"rank 0 RankFailed 2 rank 1 of 2 failed: {bad}: cannot read image" in rank0
    for out in (rank0, rank1):
        assert "finished" not in out and "group up: False" in out
    assert time.monotonic() - start < 200  # far below any collective timeout


@pytest.mark.slow
def test_leaving_is_bounded_when_a_peer_never_comes(tmp_path: Path) -> None:
    rank0, rank1 = start_group("leave-alone", tmp_path)
    try:
        assert rank0.stdout is not None and rank1.stdin is not None
        lines = [rank0.stdout.readline() for _ in range(2)]  # blocks until rank 0 has left
        assert lines[0].startswith("rank 0 joined gloo world 2")
        seconds = float(lines[1].split("after ")[1].split()[0])
        assert 2.5 <= seconds < 30, lines  # waited its 3 s for rank 1, not the 60 s default
        assert rank0.wait(timeout=60) == 0
        rank1.stdin.close()
        assert rank1.wait(timeout=60) == 0
    finally:
        for proc in (rank0, rank1):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.mark.slow
def test_resume_reads_rank_0s_checkpoint_and_a_refusal_keeps_the_group(tmp_path: Path) -> None:
    outputs = finish(start_group("resume", tmp_path), timeout=120)
    assert not (tmp_path / "rank1").exists()
    for rank, out in enumerate(outputs):
        assert f"rank {rank} resumed epoch 3 weights [0.0, 1.0, 2.0, 3.0]" in out
        assert f"rank {rank} RsSearchError 2 " in out and "belongs to another candidate" in out
        assert f"rank {rank} sum 3" in out  # the same collective afterwards: the group is up
        left = float(out.split(f"rank {rank} left after ")[1].split()[0])
        assert left < 30  # both came: no waiting for the deadline
