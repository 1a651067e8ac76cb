"""Loader processes end with the run, however it ends (they ignore SIGTERM, so one left alive at
interpreter exit made multiprocessing's exit handler wait for it forever)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    from rs_search.errors import TrainingDiverged
    from rs_search.specs import ArchSpec, Candidate, RecipeSpec
    from rs_search.train.engine import RunOptions, train

    cand = Candidate(
        arch=ArchSpec(layout=(1, 1, 1, 1), width=0.25, resolution=16, num_classes=10),
        recipe=RecipeSpec(epochs=1, batch_size=64, lr_per_256=1e6, warmup_epochs=0,
                          ema_decay=0.0, randaug_layers=0),
    )
    kept = []
    try:
        train(cand, RunOptions(data="synthetic:10", device="cpu", num_workers=1, progress=False))
    except TrainingDiverged as exc:
        kept.append(exc)  # its traceback keeps the training frames, and their loaders, alive
    print("raised", flush=True)
    """
)


def test_a_diverged_run_kept_as_an_exception_does_not_hold_the_process_at_exit() -> None:
    # Before the fix this process never exited (the timeout below fired).
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "raised"
