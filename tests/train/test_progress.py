"""The training progress display without a terminal: step lines a log can be tailed by."""

from __future__ import annotations

import io

from rs_search.train.progress import PLAIN_EVERY_S, _Plain, make_progress


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_show_the_first_step_then_at_most_every_30_s() -> None:
    stream = io.StringIO()
    assert isinstance(make_progress(True, stream), _Plain)  # not a terminal: plain lines
    clock = Clock()
    bar = _Plain(stream, clock=clock)
    assert bar.every_s == PLAIN_EVERY_S == 30.0
    bar.start_epoch(2, 3, 100)
    for step in range(1, 101):
        clock.now += 0.7  # 70 s for the epoch
        bar.update(step, images_per_s=50.0, loss=2.0 / step, top1=float(step) / 2)
    bar.end_epoch("epoch 2/3  train loss 0.0200")
    bar.start_epoch(3, 3, 100, done=40)  # the rest of an epoch after a mid-epoch resume
    clock.now += 0.7
    bar.update(41, images_per_s=12.5, loss=0.5, top1=90.0)
    bar.close()
    assert stream.getvalue().splitlines() == [
        "epoch 2/3: step 1/100, 50.0 img/s, loss 2.0000, top-1 0.5%",
        "epoch 2/3: step 44/100, 50.0 img/s, loss 0.0455, top-1 22.0%",  # 30.1 s later
        "epoch 2/3: step 87/100, 50.0 img/s, loss 0.0230, top-1 43.5%",
        "epoch 2/3  train loss 0.0200",
        "epoch 3/3: step 41/100, 12.5 img/s, loss 0.5000, top-1 90.0%",
    ]


def test_progress_off_prints_nothing() -> None:
    stream = io.StringIO()
    bar = make_progress(False, stream)
    bar.start_epoch(1, 1, 2)
    bar.update(1, images_per_s=1.0, loss=1.0, top1=1.0)
    bar.end_epoch("epoch 1/1")
    bar.close()
    assert stream.getvalue() == ""
