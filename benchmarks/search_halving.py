"""Successive halving against no halving: the same search twice, in one run, as ratios.

Runs ``rs-search start`` twice into one fresh SQLite file (two studies sharing one latency cache,
so both see the same latency for an architecture), with the same space, budget, trial count and
sampler seed: once with Pareto-aware successive halving (eta 3) and once with ``--no-halving``.
Prints the epochs each spent, the wall time, both Pareto fronts and their hypervolumes against
the same reference point (top-1 0 %, 1.1 x the slowest latency seen), as ratios halving/none.

    python benchmarks/search_halving.py                       # tiny test space, synthetic data
    python benchmarks/search_halving.py --space spaces/quickstart.yaml --data digits \\
        --budget 12epochs --trials 16                          # the quickstart (long on a CPU)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

from rs_search.search.summary import front
from rs_search.selection.pareto import hypervolume
from rs_search.study.read import read_study
from rs_search.study.record import TrialRecord
from rs_search.study.settings import StudySettings

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    wall: float
    epochs: int
    pruned: int
    settings: StudySettings
    trials: list[TrialRecord]
    front: list[TrialRecord]


def run(
    space: Path, data: str, budget: str, trials: int, seed: int, halving: bool, workdir: Path
) -> Run:
    workdir.mkdir(parents=True, exist_ok=True)
    name = "halving" if halving else "none"
    cmd = [
        sys.executable,
        "-m",
        "rs_search.cli.main",
        "start",
        "--space",
        str(space),
        "--budget",
        budget,
        "--trials",
        str(trials),
        "--data",
        data,
        "--seed",
        str(seed),
        "--device",
        "cpu",
        "--study",
        name,
        "--halving" if halving else "--no-halving",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RS_SEARCH_STORAGE"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(
            f"search failed ({'halving' if halving else 'no halving'}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / 'rs-search.db'}")
    snapshot = read_study(study)
    settings = snapshot.settings
    assert settings is not None
    trials_ = list(snapshot.records)
    return Run(
        wall=wall,
        epochs=sum(t.epochs_trained for t in trials_),
        settings=settings,
        trials=trials_,
        front=front(trials_, settings),
        pruned=sum(t.state == "PRUNED" for t in trials_),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=ROOT / "tests/search/data/tiny4.yaml")
    parser.add_argument("--data", default="synthetic:10")
    parser.add_argument("--budget", default="9epochs")
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="keep the two databases here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        results = {
            h: run(args.space, args.data, args.budget, args.trials, args.seed, h, base)
            for h in (True, False)
        }
    settings = results[True].settings
    top1_latency = ("accuracy", "latency")
    latencies = [t.values["latency"] for r in results.values() for t in r.trials if t.values]
    reference = (0.0, 1.1 * max(latencies))
    hv = {
        h: hypervolume(
            [t.point(top1_latency) for t in r.front], ("maximize", "minimize"), reference
        )
        for h, r in results.items()
    }
    epochs = {h: r.epochs for h, r in results.items()}
    wall = {h: r.wall for h, r in results.items()}
    print(
        f"space {args.space.name}, data {args.data}, {args.trials} trials x {args.budget}, "
        f"sampler seed {args.seed}, rungs {settings.rungs} (eta {settings.eta})"
    )
    print(
        f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}, load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    print()
    print("| | halving (eta 3) | no halving | ratio |")
    print("|---|---|---|---|")
    print(
        f"| trial-epochs trained | {epochs[True]} | {epochs[False]} | "
        f"{epochs[True] / epochs[False]:.2f} |"
    )
    print(
        f"| wall time | {wall[True]:.0f} s | {wall[False]:.0f} s | {wall[True] / wall[False]:.2f} |"
    )
    print(f"| pruned trials | {results[True].pruned} | {results[False].pruned} | |")
    print(f"| front size | {len(results[True].front)} | {len(results[False].front)} | |")
    print(
        f"| hypervolume (ref top-1 0 %, {reference[1]:.2f} ms) | {hv[True]:.1f} | "
        f"{hv[False]:.1f} | {hv[True] / hv[False]:.2f} |"
    )
    for h, r in results.items():
        print()
        print(f"front, {'halving' if h else 'no halving'}:")
        for t in r.front:
            print(
                f"  trial {t.number}: {t.label}  top-1 {t.top1:.2f} %  "
                f"latency {t.latency_ms:.3f} ms"
            )


if __name__ == "__main__":
    main()
