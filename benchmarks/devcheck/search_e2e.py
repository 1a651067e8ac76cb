"""Part ``search``: a 4-trial ``rs-search start --device cuda`` end to end on a generated image
folder, with the study in SQLite in the output folder; records the wall time, the trials'
states and the Pareto front (``optuna.load_study(...).best_trials``).

The command is the CLI a user types (run as ``python -m rs_search.cli.main``: the GPU machine
has the source tree, not an installed ``rs-search`` script). The latency target is a small
CUDA profile measured with a shortened protocol (``$RS_SEARCH_LATENCY_PROTOCOL``, meant for
smoke runs): this part checks that the pieces work together on the device, the ``latency`` part
measures the protocol itself. On its deadline the part sends SIGTERM to ``rs-search start``,
which passes it to its workers (they checkpoint and hand their trials back).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from devcheck.datapath import write_image_folder
from devcheck.runner import PartContext, PartTimeout, Recorder, Skip
from devcheck.sizes import Sizes, sizes

STUDY = "devcheck"
TRIALS = 4
_SMOKE_PROTOCOL = "warmup_s=0.1,rep_s=0.05,min_time_s=0.5,settle_repeats=3,max_repeats=8"


def space(sz: Sizes) -> dict[str, Any]:
    """A space of four small architectures (two widths x two resolutions) and a fixed recipe."""
    return {
        "name": STUDY,
        "description": "benchmarks/device_check.py: a 4-trial search end to end",
        "architecture": {
            "depth": [[1, 1, 1, 1]],
            "width": [0.25, 0.5],
            "resolution": list(sz.search_resolutions),
            "se_ratio": 0.25,
            "resnet_d": True,
            "num_classes": sz.search_classes,
            "in_channels": 3,
        },
        "recipe": {
            "batch_size": min(32, sz.search_classes * sz.search_train // 2),
            "lr_per_256": 0.4,
            "weight_decay": 5.0e-5,
            "label_smoothing": 0.1,
            "ema_decay": 0.0,
            "dropout": 0.0,
            "stochastic_depth": 0.0,
            "randaug_layers": 0,
            "randaug_magnitude": 10,
            "warmup_epochs": 0,
            "precision": "auto",
        },
        "objectives": {"accuracy": "maximize", "latency": "minimize"},
        "constraints": {},
        "target": dict(sz.search_target),
    }


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (``rs-search start`` passes it to its workers), SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=6)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def run(ctx: PartContext, rec: Recorder) -> None:
    import yaml

    try:
        import optuna
    except ImportError:
        raise Skip(
            "optuna is not installed here; carry its wheels (benchmarks/devcheck/wheels.sh)"
        ) from None
    sz = sizes(ctx.dry_run)
    root = ctx.work / "search_images"
    with rec.item("write_images") as item:
        item.update(
            write_image_folder(
                root,
                count=sz.search_classes * sz.search_train,
                classes=sz.search_classes,
                size=(sz.search_side, sz.search_side),
                val_per_class=sz.search_val,
                seed=1,
                tinted=True,
            )
        )
    space_file = ctx.work / "devcheck_space.yaml"
    space_file.write_text(yaml.safe_dump(space(sz), sort_keys=False))
    db = ctx.out / "search.db"
    db.unlink(missing_ok=True)
    storage = f"sqlite:///{db}"
    log = ctx.out / "search.log"
    artifacts = ctx.work / "search_artifacts"
    timeout = int(max(10, ctx.left() - 30))  # start no new trial after this
    cmd = [
        sys.executable, "-m", "rs_search.cli.main", "start",
        "--space", str(space_file), "--budget", f"{sz.search_epochs}epochs",
        "--trials", str(TRIALS), "--study", STUDY, "--storage", storage,
        "--data", f"imagefolder:{root}", "--device", ctx.device,
        "--artifacts", str(artifacts), "--seed", "0", "--no-halving",
        "--timeout", f"{timeout}s",
    ]  # fmt: skip
    rec.put("command", " ".join(cmd[1:]).replace(sys.executable, "python"))
    env = {**os.environ, "RS_SEARCH_LATENCY_PROTOCOL": _SMOKE_PROTOCOL, "PYTHONUNBUFFERED": "1"}
    with rec.item("start") as item:
        start = time.perf_counter()
        with log.open("wb") as handle:
            proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env)
            try:
                code = proc.wait(timeout=max(5.0, ctx.left() - 8))
            except subprocess.TimeoutExpired:
                code = _stop(proc)
                raise RuntimeError("rs-search start ran past the part's budget") from None
            except PartTimeout:
                _stop(proc)
                raise
            finally:
                item["wall_s_start"] = round(time.perf_counter() - start, 1)
                item["exit_code"] = proc.poll()
                _append_worker_logs(log, artifacts)
        rec.put("wall_s", item["wall_s_start"])
        if code != 0:
            last = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"rs-search start exited with status {code}: {' | '.join(last)}")
    with rec.item("front") as item:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=STUDY, storage=storage)
        trials = study.get_trials(deepcopy=False)
        states = Counter(t.state.name for t in trials)
        front = [
            {"trial": t.number, "values": t.values, "params": t.params}
            for t in sorted(study.best_trials, key=lambda t: t.number)
        ]
        item.update(trials=len(trials), states=dict(states), front=front)
        rec.put("trials", dict(states))
        rec.put("front", front)
        if states.get("COMPLETE", 0) < 1:
            raise RuntimeError(f"no trial completed: {dict(states)}")


def _append_worker_logs(log: Path, artifacts: Path) -> None:
    """The workers' logs, appended to ``search.log`` (the output folder keeps few files)."""
    with log.open("a") as out:
        for path in sorted((artifacts / STUDY / "logs").glob("*.log")):
            out.write(f"\n===== {path.name} =====\n")
            out.write(path.read_text(errors="replace")[-20000:])
