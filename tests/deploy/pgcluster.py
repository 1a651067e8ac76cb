"""A private PostgreSQL cluster for one test: this machine's ``initdb``/``pg_ctl`` in a temporary
directory on a free loopback port, never the shared server (its roles and settings stay
untouched). The superuser ``postgres`` connects over loopback without a password; every other
role must give its password (scram-sha-256), as on a real server.

PostgreSQL refuses to run as root, so under root the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` that has initdb and pg_ctl (Debian's layout)."""
    found = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    usable = [p for p in found if (p / "initdb").exists() and (p / "pg_ctl").exists()]
    return usable[-1] if usable else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    bin: Path
    port: int
    root: Path
    as_user: str | None

    def url(self, user: str = "postgres", password: str | None = None, db: str = "postgres") -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{db}"

    def run(
        self, tool: str, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / tool), *args]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        return subprocess.run(
            cmd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self) -> None:
        """Start the server (again, after ``stop``) on the same port and files."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (a clean shutdown that disconnects every client, as a
        restart does) or ``immediate`` (a crash; recovery replays the WAL at the next start)."""
        self.run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def psql(
        self, db: str, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            db,
            *args,
            env=env,
            check=check,
        )


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    """Start a cluster, yield it, stop it and delete its files (skip without PostgreSQL)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("PostgreSQL's initdb/pg_ctl are required in CI (/usr/lib/postgresql/*/bin)")
        pytest.skip("no initdb/pg_ctl under /usr/lib/postgresql/*/bin")
    as_user = "postgres" if os.geteuid() == 0 else None
    # Not under pytest's tmp_path: its parents are private to root, and postgres must enter.
    root = Path(tempfile.mkdtemp(prefix="rs-pg-"))
    try:
        if as_user:
            entry = pwd.getpwnam(as_user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        data = root / "data"
        cluster = Cluster(bin=bin_dir, port=_free_port(), root=root, as_user=as_user)
        cluster.run(
            "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop", check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
