"""``rs-search dashboard``: the real command on a free port serves optuna-dashboard for a study on
real PostgreSQL and stops cleanly on SIGINT and SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

from tests.reports.factory import demo_study
from tests.search.conftest import OutputLines

optuna.logging.set_verbosity(optuna.logging.WARNING)

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_dashboard_serves_the_study_and_stops_cleanly(
    postgres_url: str, stop: int, tmp_path: Path
) -> None:
    demo_study(postgres_url, name="dash-demo")
    port = free_port()
    errors = (tmp_path / "stderr").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rs_search.cli.main",
            "dashboard",
            "--storage",
            postgres_url,
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    assert process.stdout is not None
    output = OutputLines(process.stdout)
    try:
        # The line comes once the socket listens: no polling of the port.
        ready = output.wait_for(r" at (http://\S+/) \(Ctrl-C to stop\)$", timeout=120)
        base = ready.group(1).rstrip("/")
        assert base == f"http://127.0.0.1:{port}"
        status, body = get(f"{base}/api/studies")
        assert status == 200
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["dash-demo"]
        assert studies[0]["directions"] == ["maximize", "minimize"]
        study_id = studies[0]["study_id"]
        status, body = get(f"{base}/api/studies/{study_id}?after=0")
        assert status == 200 and len(json.loads(body)["trials"]) == 9
        status, page = get(f"{base}/dashboard")
        assert status == 200 and b"<html" in page.lower()
        status, bundle = get(f"{base}/static/bundle.js", {"Accept-Encoding": "gzip"})
        assert status == 200 and len(bundle) > 100_000
        # optuna-dashboard itself answers 500 here without the header; ours does not.
        status, bundle = get(f"{base}/static/bundle.js")
        assert status == 200 and len(bundle) > 100_000
        assert not listening_elsewhere(port)
        process.send_signal(stop)
        process.wait(timeout=60)
        out = output.all(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        errors.seek(0)
        err = errors.read()
        errors.close()
    assert process.returncode == 0, err
    assert f"at http://127.0.0.1:{port}/" in out
    assert f"dashboard stopped ({signal.Signals(stop).name})" in out
    assert "Traceback" not in err
    assert not listening(port)


def listening_elsewhere(port: int) -> bool:
    """Bound to loopback by default: the port is not open on the machine's other addresses."""
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return False
    if address.startswith("127."):
        return False
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((address, port)) == 0


def test_dashboard_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(storage=storage, study_name="s")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "rs_search.cli.main",
                "dashboard",
                "--storage",
                storage,
                "--port",
                str(port),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "choose another address with --host/--port"
    ]


def test_unreachable_storage_is_one_line_without_the_password() -> None:
    url = "postgresql+psycopg://rs:s3cret-pw@127.0.0.1:9/nowhere"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "rs_search.cli.main",
            "dashboard",
            "--storage",
            url,
            "--port",
            str(free_port()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach storage"), lines
    assert "s3cret-pw" not in result.stderr + result.stdout and "***" in lines[0]
