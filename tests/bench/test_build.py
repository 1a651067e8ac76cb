"""``rs-search bench table`` end to end: real training on synthetic data, a real SIGKILL, a rerun
that continues (recorded candidates untouched, the interrupted one resumed from its checkpoint),
and the refusals (another process building the table, other settings, bad flags)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rs_search.bench.build import default_work_dir, table_lock
from rs_search.bench.table import load_table
from rs_search.cli.main import main
from rs_search.train.checkpoint import checkpoint_paths
from tests.bench.helpers import NANO
from tests.search.conftest import cli, cli_env, wait_for

HOLD_LOCK = (
    "import fcntl, sys; f = open(sys.argv[1], 'a+'); "
    "fcntl.lockf(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB); print('held', flush=True); "
    "sys.stdin.read()"
)
ARGS = ["bench", "table", "--space", str(NANO), "--data", "synthetic", "--budget", "4epochs"]


def table_lines(path: Path) -> dict[str, dict[str, object]]:
    lines = path.read_text().splitlines()[1:]
    return {d["key"]: d for d in map(json.loads, lines)}


@pytest.mark.slow
def test_killed_build_continues_where_it_stopped(tmp_path: Path) -> None:
    out = tmp_path / "nano.jsonl"
    work = default_work_dir(out)
    env = cli_env(RS_SEARCH_PROGRESS="plain")
    proc = subprocess.Popen(
        cli(*ARGS, "--out", str(out)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # blocking reads: the first candidate's record line
            if line.startswith("recorded 1/4"):
                break
        else:
            pytest.fail(f"the build ended before recording a candidate (exit {proc.wait()})")
        recorded = {k for k, d in table_lines(out).items() if d["status"] == "done"}
        assert len(recorded) >= 1

        def interrupted_has_a_checkpoint() -> bool:
            done = {k for k, d in table_lines(out).items() if d["status"] == "done"}
            return any(
                checkpoint_paths(folder)
                for folder in work.iterdir()
                if folder.is_dir() and folder.name not in done
            )

        wait_for(interrupted_has_a_checkpoint, timeout=300, every=0.1, what="a checkpoint")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    before = table_lines(out)  # a complete file: never half-written
    load_table(out)
    finished = {k: d for k, d in before.items() if d["status"] == "done"}
    partial = {  # candidate key -> epochs in its newest checkpoint (ckpt-EEEE-SSSSSS.pt)
        folder.name: int(checkpoint_paths(folder)[0].name.split("-")[1])
        for folder in work.iterdir()
        if folder.is_dir() and folder.name not in finished and checkpoint_paths(folder)
    }
    assert finished and partial, (finished.keys(), partial)

    rerun = subprocess.run(
        cli(*ARGS, "--out", str(out)), env=env, capture_output=True, text=True, timeout=900
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(finished)} of 4 candidates already recorded" in rerun.stdout
    after = table_lines(out)
    table = load_table(out)
    assert table.complete and len(table.done) == 4
    for key, line in finished.items():  # recorded candidates were not retrained
        assert after[key] == line
        assert not [
            x
            for x in rerun.stderr.splitlines()
            if x.startswith("recorded") and f" {after[key]['label']}: " in x
        ]
    for key, epochs in partial.items():  # the interrupted one resumed from its checkpoint
        assert after[key]["train"]["resumed_from_epoch"] == epochs  # type: ignore[index]
        assert f"resuming {after[key]['label']} from its checkpoint at epoch {epochs}" in (
            rerun.stderr
        )
    fresh = set(after) - set(finished) - set(partial)
    assert all(after[k]["train"]["resumed_from_epoch"] is None for k in fresh)  # type: ignore[index]
    assert not work.exists()  # checkpoints and the latency cache are gone once it is complete


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_130_then_continues(tmp_path: Path) -> None:
    out = tmp_path / "nano.jsonl"
    env = cli_env(RS_SEARCH_PROGRESS="plain")
    args = [*ARGS[:-1], "2epochs", "--out", str(out)]
    proc = subprocess.Popen(
        cli(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # blocking reads until the first candidate is recorded
        if line.startswith("recorded 1/4"):
            proc.send_signal(signal.SIGTERM)  # the second one is starting or training
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 130, rest[-2000:]
    assert rest.count("error: stopped") == 1 and "run the same command again to continue" in rest
    assert "Traceback" not in rest
    before = {k: d for k, d in table_lines(out).items() if d["status"] == "done"}
    assert 1 <= len(before) < 4
    header = json.loads(out.read_text().splitlines()[0])
    recorded_train = sum(d["train"]["seconds"] for d in before.values())  # type: ignore[index]
    assert header["seconds"]["wall"] > header["seconds"]["train"] >= recorded_train * 0.99
    rerun = subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = table_lines(out)
    assert all(after[k] == d for k, d in before.items())
    assert load_table(out).complete and len(load_table(out).done) == 4


def test_a_second_build_of_the_same_table_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nano.jsonl"
    work = default_work_dir(out)
    work.mkdir()
    (work / ".lock").write_text("pid 4242")
    holder = subprocess.Popen(  # another process holds the build's lock, as a builder would
        [sys.executable, "-c", HOLD_LOCK, str(work / ".lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(SystemExit) as info:
            main([*ARGS, "--out", str(out)])
    finally:
        holder.communicate("", timeout=60)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: {out} is being built by pid 4242; wait for it, or stop it and rerun\n"
    assert not out.exists() or load_table(out).done == ()


def test_the_lock_is_not_shared_with_forked_children(tmp_path: Path) -> None:
    """A killed builder's forked loader processes outlive it by seconds; the lock must not."""
    out = tmp_path / "nano.jsonl"
    work = default_work_dir(out)
    with table_lock(work, out):
        (work / "candidate").mkdir()  # a build in progress: the lock file stays
        child = os.fork()
        if child == 0:  # pragma: no cover - the child only waits, as a loader process would
            signal.pause()  # until the test kills it
            os._exit(0)
    try:
        with table_lock(work, out):  # the parent let go; the waiting child holds nothing
            assert (work / ".lock").read_text() == f"pid {os.getpid()}"
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_a_table_made_with_other_settings_is_not_continued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rs_search.bench.build import plan_table
    from rs_search.bench.table import write_table
    from rs_search.space import load_space

    out = tmp_path / "nano.jsonl"
    table, resumed = plan_table(
        space=load_space(NANO),
        data="synthetic",
        budget=4,
        candidates=64,
        seed=0,
        out=out,
        device="cpu",
    )
    assert not resumed and len(table.entries) == 4
    write_table(out, table)
    text = out.read_text()
    with pytest.raises(SystemExit) as info:
        main([*ARGS, "--out", str(out), "--seed", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} holds a table made with other settings: seed 0 ")
    assert err.count("\n") == 1
    assert out.read_text() == text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "4"], "the unit is missing"),
        (["--data", "nowhere"], "unknown data source"),
        (["--space", "/nonexistent.yaml"], "cannot read space file"),
        (["--device", "gpu"], "--device 'gpu': unknown device"),
    ],
)
def test_bad_flags_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "t.jsonl"
    args = [*ARGS, "--out", str(out)]
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()
    assert not default_work_dir(out).exists()
