"""The deployment kit's files: scripts pass ``bash -n`` and shellcheck, the Kubernetes manifests
pass the API schema of a pinned Kubernetes version (offline: kubernetes-validate ships the
schemas), and the compose files have the structure db/README.md promises.

No Docker engine runs here, so compose.yaml is checked by parsing it (services, volumes, the
healthcheck, loopback-only ports, the init script it mounts), not by ``docker compose config``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    p for p in [*ROOT.glob("workers/**/*"), *ROOT.glob("db/**/*")] if p.suffix in (".sh", ".sbatch")
)
MANIFESTS = sorted(ROOT.glob("workers/kubernetes/*.yaml"))
KUBERNETES_VERSION = "1.30.0"  # pinned: the oldest release the manifests promise to work with


def _need_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("shellcheck is required in CI (Debian package shellcheck)")
        pytest.skip("shellcheck is not installed (Debian package shellcheck)")


def test_the_kit_is_there() -> None:
    assert [p.name for p in SCRIPTS] == ["slurm.sbatch", "torchrun.sh"]
    assert {p.name for p in MANIFESTS} >= {"job.yaml", "secret.example.yaml"}
    for path in SCRIPTS:
        assert path.stat().st_mode & 0o111, f"{path} is not executable"
        assert path.read_text().startswith("#!/usr/bin/env bash\n")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    parsed = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert parsed.returncode == 0, parsed.stderr
    _need_shellcheck()
    checked = subprocess.run(
        ["shellcheck", "--severity=style", str(script)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout


def test_shellcheck_would_catch_a_bad_script(tmp_path: Path) -> None:
    _need_shellcheck()
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nexec rs-search worker --study $STUDY\n")
    assert subprocess.run(["shellcheck", str(bad)], capture_output=True).returncode != 0


def _validate(document: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_manifests_pass_the_kubernetes_schema(manifest: Path) -> None:
    documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    assert documents
    for document in documents:
        _validate(document)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    import kubernetes_validate

    job = yaml.safe_load((ROOT / "workers/kubernetes/job.yaml").read_text())
    spec = job["spec"]["template"]["spec"]
    spec["terminationGracePeriodSecond"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(job)


def _job() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "workers/kubernetes/job.yaml").read_text())
    return document


def test_the_worker_job_has_what_a_gpu_worker_needs() -> None:
    job = _job()
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    # the URL from a Secret, never in the manifest or on the command line
    assert env["RS_SEARCH_STORAGE"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert "postgresql" not in " ".join(container["command"] + container["args"])
    # one rank per GPU requested
    gpus = container["resources"]["limits"]["nvidia.com/gpu"]
    assert int(env["RS_SEARCH_NPROC"]["value"]) == gpus
    args = container["args"]
    assert args[args.index("--nproc") + 1] == "$(RS_SEARCH_NPROC)"
    # time to checkpoint on SIGTERM, and shared memory for DataLoader workers
    assert pod["terminationGracePeriodSeconds"] >= 120
    shm = {v["name"]: v for v in pod["volumes"]}[
        next(m["name"] for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
    ]
    assert shm["emptyDir"]["medium"] == "Memory"
    # a work queue: workers leave when the budget is spent, and a finished one is not replaced
    assert "completions" not in job["spec"] and job["spec"]["parallelism"] >= 1
    assert pod["restartPolicy"] == "OnFailure"


# --- compose ---------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::?([-?])([^}]*))?\}")


def _defaults(value: str) -> str:
    """Compose interpolation with every variable unset: ``${X:-d}`` -> d."""
    return _VAR.sub(lambda m: m.group(3) if m.group(2) == "-" else "", value)


def _compose(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "db" / name).read_text())
    return document


SERVICE_KEYS = {
    "image", "restart", "environment", "command", "ports", "volumes", "healthcheck",
    "profiles", "depends_on", "stop_grace_period",
}  # fmt: skip


def test_compose_runs_postgres_with_a_named_volume_and_a_healthcheck() -> None:
    compose = _compose("compose.yaml")
    assert set(compose) <= {"name", "services", "volumes"}
    services = compose["services"]
    assert set(services) == {"postgres", "dashboard"}
    for service in services.values():
        assert set(service) <= SERVICE_KEYS, set(service) - SERVICE_KEYS
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:")
    data = next(v for v in pg["volumes"] if v.endswith(":/var/lib/postgresql/data"))
    assert data.split(":")[0] in compose["volumes"]  # a named volume, not a host folder
    init = next(v for v in pg["volumes"] if "/docker-entrypoint-initdb.d/" in v)
    assert (ROOT / "db" / init.split(":")[0]).resolve() == ROOT / "db" / "init.sql"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    # both passwords init.sql reads reach the container, and none has a default
    for name in ("POSTGRES_PASSWORD", "RS_OWNER_PASSWORD", "RS_WORKER_PASSWORD"):
        assert re.fullmatch(r"\$\{" + name + r":\?.+\}", pg["environment"][name])


def test_compose_dashboard_is_optional_and_on_loopback() -> None:
    compose = _compose("compose.yaml")
    dashboard = compose["services"]["dashboard"]
    assert dashboard["profiles"] == ["dashboard"]
    assert dashboard["depends_on"]["postgres"]["condition"] == "service_healthy"
    # user only: libpq takes the password from PGPASSWORD, so no URL or command line holds it
    assert re.fullmatch(
        r"postgresql\+psycopg2://rs_worker@postgres:5432/rs_search", dashboard["command"][-1]
    )
    assert "PGPASSWORD" in dashboard["environment"]
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert _defaults(port).startswith("127.0.0.1:"), port


def test_compose_variables_are_all_in_env_example() -> None:
    used = set()
    for name in ("compose.yaml", "compose.tls.yaml"):
        used |= {m.group(1) for m in _VAR.finditer((ROOT / "db" / name).read_text())}
    example = (ROOT / "db" / "env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert used <= listed, used - listed


def test_compose_tls_turns_ssl_on_and_refuses_plain_tcp() -> None:
    tls = _compose("compose.tls.yaml")["services"]["postgres"]
    args = " ".join(tls["command"])
    assert "ssl=on" in args and "hba_file=" in args
    hba = next(v for v in tls["volumes"] if v.endswith(":/etc/rs-search/pg_hba.conf:ro"))
    rules = [
        line.split()
        for line in (ROOT / "db" / hba.split(":")[0].removeprefix("./")).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ["hostnossl", "all", "all", "0.0.0.0/0", "reject"] in rules
    assert all(rule[-1] != "trust" for rule in rules)
    # the base file's max_connections setting is kept when the TLS file replaces the command
    base = " ".join(_compose("compose.yaml")["services"]["postgres"]["command"])
    assert "max_connections" in base and "max_connections" in args
