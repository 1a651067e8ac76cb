"""The database blinks mid-trial: storage calls are retried with backoff and no result is lost
(issue 5, item 5). A TCP proxy between the worker and the real PostgreSQL drops every connection
and refuses new ones for a few seconds while a trial trains.

The blink starts when the worker prints the first step of trial 0's epoch 2 (its progress line;
the event-driven pattern of ``tests/reliability/test_fault_tolerance.py``), on the
``MICRO_STEPS`` space (128 steps an epoch), so the trial is surely mid-training. Before, the
test polled the study for a finished epoch 1 and then cut: on a fast host trial 0 (8 steps an
epoch) could end meanwhile."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from optuna.trial import TrialState

from tests.search.conftest import MICRO_STEPS, OutputLines, cli, cli_env, load, make_study

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


class BlinkingProxy:
    """Forwards TCP to ``target``; ``cut(s)`` resets every connection and refuses new ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.down_until = 0.0
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                self.refused += 1
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


def test_worker_survives_a_database_blink(postgres_url, tmp_path):
    make_study(
        postgres_url,
        tmp_path,
        "blink",
        trials=2,
        budget=3,
        heartbeat=1,
        grace=30,
        space=MICRO_STEPS,
    )
    parts = urlsplit(postgres_url)
    proxy = BlinkingProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    worker = subprocess.Popen(
        cli("worker", "--study", "blink", "--device", "cpu", "--loader-workers", "0"),
        env=cli_env(via_proxy),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert worker.stdout is not None
        output = OutputLines(worker.stdout)
        output.wait_for(r"^epoch 2/3: step 1/128, ", timeout=240)  # trial 0, mid-training
        proxy.cut(6)
        assert worker.wait(timeout=600) is not None
        out = output.all(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        proxy.close()
    print(out)
    assert worker.returncode == 0, out
    assert "retry" in out and "storage" in out  # the blink was hit and retried
    assert proxy.refused > 0
    trials = load("blink", postgres_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2, [
        (t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials
    ]
    assert all(len(t.user_attrs["curve"]) == 3 for t in trials)
    assert not any("failed_trial" in t.system_attrs for t in trials)
