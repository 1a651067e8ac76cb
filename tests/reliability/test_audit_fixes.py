"""Issue 10's audit findings in this suite's area, each with the test that failed before its fix
(the docstrings say how). Through the command line where a user meets the problem."""

from __future__ import annotations

import io
import subprocess
import uuid
from pathlib import Path

import pytest

from rs_search.cli.main import main
from tests.reliability.conftest import MICRO
from tests.search.conftest import cli, cli_env


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``rs-search ARGV`` in this process: (exit status, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- usage errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["start"], "Missing option '--space'"),
        (["start", "--space", "x.yaml", "--budget", "1epochs", "--trials", "many"], "--trials"),
        (["start", "--bogus"], "No such option: --bogus"),
        (["nosuch"], "No such command 'nosuch'"),
        (["space", "check", "--bogus", "x.yaml"], "No such option: --bogus"),
        (["worker", "--study"], "requires an argument"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen failing before the fix in ``cli/main.py``: typer raises its own copy of click's
    exceptions, which ``except click.ClickException`` missed, so every case exited 1 with
    ``error: MissingParameter: Missing parameter: space (run with --debug for the
    traceback)``."""
    code, out, err = _run(argv, capsys)
    assert code == 2, err
    line = _one_line(err)
    assert says in line and "--help" in line, line


def test_a_group_without_its_command_shows_help_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Seen failing before the fix: the help was followed by ``error: NoArgsIsHelpError:`` and
    exit status 1."""
    code, out, err = _run(["space"], capsys)
    assert code == 2
    assert "check" in out + err and "error" not in (out + err).lower()


# -- upper bounds ------------------------------------------------------------------------------


def _space(tmp_path: Path, architecture: str, extra: str = "") -> Path:
    path = tmp_path / f"space-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(f"architecture:\n{architecture}\n{extra}")
    return path


def test_a_huge_layout_is_refused_at_once(tmp_path: Path) -> None:
    """Seen failing before the bound: ``space check`` built 100,000 blocks and did not return
    (the test's timeout, 120 s, expired)."""
    space = _space(tmp_path, "  depth: [[100000, 1, 1, 1]]")
    done = subprocess.run(
        cli("space", "check", str(space)),
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    line = _one_line(done.stderr)
    assert "architecture.depth" in line and "project heuristic" in line, line


@pytest.mark.parametrize(
    ("architecture", "extra", "where"),
    [
        ("  num_classes: 1000000000000", "", "architecture.num_classes"),
        ("  stem_width: 1000000", "", "architecture.stem_width"),
        ("  in_channels: 1000000", "", "architecture.in_channels"),
        ("  depth: [[1, 1, 1, 1]]", "recipe: {batch_size: 1000000000}", "recipe.batch_size"),
        ("  depth: [[1, 1, 1, 1]]", "recipe: {randaug_layers: 1000000}", "recipe.randaug_layers"),
        ("  depth: [[1, 1, 1, 1]]", "recipe: {warmup_epochs: 1000000000}", "recipe.warmup_epochs"),
        ("  depth: [[1, 1, 1, 1]]", "target: {batch_size: 1000000000000}", "target.batch_size"),
        ("  depth: [[1, 1, 1, 1]]", "target: {threads: 1000000}", "target.threads"),
        ("  resolution: [" + ", ".join(map(str, range(8, 1024))) + "]", "", "resolution"),
    ],
)
def test_values_past_the_project_bounds_are_one_clear_line(
    architecture: str,
    extra: str,
    where: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Seen failing before the bounds: each file was ``valid`` (exit 0) and ``space check``
    printed its table (a network with 10^12 classes, a target batch of 10^12 images)."""
    code, out, err = _run(["space", "check", str(_space(tmp_path, architecture, extra))], capsys)
    assert code == 2, out
    line = _one_line(err)
    assert where in line and "project heuristic" in line, line


def test_the_published_extremes_stay_inside_the_bounds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bounds are generous: ResNet-RS-420's layout, ImageNet-21k's classes, the paper's
    batch of 4096 and its 350 epochs' warm-up range are accepted. Seen failing with
    ``MAX_BLOCKS_PER_STAGE`` set to 80 (below ResNet-RS-420's 87)."""
    space = _space(
        tmp_path,
        "  depth: [50, 420, [4, 87, 87, 4]]\n  num_classes: 21841\n  width: {low: 0.25, high: 2}",
        "recipe: {batch_size: 4096, warmup_epochs: {low: 0, high: 350}}",
    )
    code, out, err = _run(["space", "check", "--no-complexity", str(space)], capsys)
    assert code == 0, err
    assert "valid" in out


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_recipe_floats_must_be_finite(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by the fuzz test. Seen failing before the check: ``lr_per_256: .nan`` and ``.inf``
    passed every comparison, so the file was ``valid`` (exit 0); ``-.inf`` was refused as
    ``must be > 0``."""
    space = _space(tmp_path, "  depth: [[1, 1, 1, 1]]", f"recipe: {{lr_per_256: {value}}}")
    code, out, err = _run(["space", "check", "--no-complexity", str(space)], capsys)
    assert code == 2, out
    assert "recipe.lr_per_256" in _one_line(err) and "finite" in err


def _start_argv(tmp_path: Path, data: str) -> list[str]:
    return [
        "start",
        "--space",
        str(MICRO),
        "--budget",
        "1epochs",
        "--trials",
        "1",
        "--data",
        data,
        "--device",
        "cpu",
        "--storage",
        f"sqlite:///{tmp_path / 'study.db'}",
        "--artifacts",
        str(tmp_path / "art"),
    ]


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("synthetic:1000000000000", "CLASSES must be an integer from 2 to"),
        ("synthetic:²", "CLASSES must be an integer"),
        ("synthetic:" + "9" * 5000, "CLASSES must be an integer"),
    ],
)
def test_synthetic_classes_are_bounded_before_anything_is_allocated(
    data: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen failing before the bound: ``synthetic:1000000000000`` exited 1 with ``error:
    RuntimeError: [enforce fail at alloc_cpu.cpp] ... DefaultCPUAllocator: can't allocate
    memory: you tried to allocate 192000000000000 bytes``; ``synthetic:²`` (``str.isdigit``
    accepts it) and 5,000 nines (past ``int()``'s digit limit) exited 1 with ``ValueError``."""
    code, out, err = _run(_start_argv(tmp_path, data), capsys)
    assert code == 2, err
    assert says in _one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no study file, no folder


@pytest.mark.parametrize(
    ("budget", "says"),
    [("10001epochs", "at most 10000 epochs"), ("9" * 5000 + "epochs", "at most 10000 epochs")],
)
def test_budgets_are_bounded(
    budget: str, says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A budget past what RecipeSpec accepts would create the study and fail every trial.
    Seen failing before the bound: ``10001epochs`` went on to create the study (here stopped by
    the bad data spec that follows it in the checks: exit 2 with the data's line), and 5,000
    nines exited 1 with ``ValueError: Exceeds the limit (4300 digits)``."""
    argv = _start_argv(tmp_path, "synthetic:1")
    argv[argv.index("--budget") + 1] = budget
    code, out, err = _run(argv, capsys)
    assert code == 2, err
    assert says in _one_line(err) and "project heuristic" in err


def test_checking_a_cifar_spec_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seen failing before the fix: ``start`` created ``cifar/`` and tried the download (here
    through a proxy on a closed port, so it failed at once), leaving the folder behind."""
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(_start_argv(tmp_path, "cifar10:cifar"), capsys)
    assert code == 2, err
    assert "no cifar10 dataset" in _one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "artifacts", ["artifacts://relative/x", "file://somehost/x", "file://", "artifacts://"]
)
def test_an_artifact_url_with_a_host_part_is_refused(
    artifacts: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by the fuzz test. Seen failing before the fix: ``artifacts://relative/x``,
    ``file://somehost/x`` and ``file://`` were accepted (the host part dropped: the store would
    have been ``/x``; ``file://`` the working directory), the study was created, and ``start``
    then crashed printing the name ``a[/b]`` (exit 1, ``MarkupError``, another finding).
    ``artifacts://`` was already refused."""
    argv = _start_argv(tmp_path, "synthetic:10")
    argv[argv.index("--artifacts") + 1] = artifacts
    argv += ["--study", "a[/b]"]
    code, out, err = _run(argv, capsys)
    assert code == 2, out + err
    assert "artifact store" in _one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- the checkpoint a retry downloads ----------------------------------------------------------


def _store_with_one_upload(tmp_path: Path) -> tuple[object, str]:
    """A file-system artifact store holding one upload; (CheckpointStore, artifact id)."""
    from optuna.artifacts import FileSystemArtifactStore

    from rs_search.search.artifacts import CheckpointStore

    base = tmp_path / "store"
    base.mkdir()
    artifact_id = str(uuid.uuid4())
    FileSystemArtifactStore(base).write(artifact_id, io.BytesIO(b"checkpoint bytes"))
    return CheckpointStore.from_spec(f"artifacts://{base}", scratch=str(tmp_path / "scratch")), (
        artifact_id
    )


@pytest.mark.parametrize(
    "name",
    [
        "../../escaped.pt",
        "../trial-9/ckpt-0001-000000.pt",
        "/ABSOLUTE/escaped.pt",
        "ckpt-0001-000000.pt/../../../escaped.pt",
        "sub/ckpt-0001-000000.pt",
        "ckpt-0001-000000.pt\n",
        "",
        7,
    ],
)
def test_a_checkpoint_name_from_the_study_cannot_write_outside_the_trial_folder(
    name: object, tmp_path: Path
) -> None:
    """The retry's ``checkpoint_artifact`` attribute is read from the database: untrusted.

    Seen failing before the fix in ``search/artifacts.py``: ``../../escaped.pt`` was written two
    folders above the trial folder, the absolute name at that path, ``7`` and the name with a
    newline were written under those names; the names through ``sub/`` or ``../trial-9/`` and
    ``ckpt-...pt/../..`` crashed ``fetch`` with ``FileNotFoundError``, and ``""`` with
    ``FileExistsError`` (the trial folder itself)."""
    store, artifact_id = _store_with_one_upload(tmp_path)
    out_dir = tmp_path / "scratch" / "study" / "trial-0"
    if isinstance(name, str) and name.startswith("/ABSOLUTE/"):
        name = str(tmp_path / "absolute" / name.removeprefix("/ABSOLUTE/"))
        (tmp_path / "absolute").mkdir()
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    fetched = store.fetch({"id": artifact_id, "file": name}, out_dir)  # type: ignore[attr-defined]
    assert fetched is False
    assert {p for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("artifact_id", ["../store/x", "/etc/hostname", "", None, ["a"]])
def test_an_artifact_id_from_the_study_is_checked_too(artifact_id: object, tmp_path: Path) -> None:
    """Seen failing before the fix for ``/etc/hostname`` (Optuna's file-system store raised
    ``ValueError: Invalid artifact_id`` out of ``fetch``: the worker crashed) and ``""``
    (``IsADirectoryError``: the store's own folder). The other ids already came to nothing (not
    found); they stay here so that the check keeps covering them."""
    store, _ = _store_with_one_upload(tmp_path)
    out_dir = tmp_path / "scratch" / "study" / "trial-0"
    ref = {"id": artifact_id, "file": "ckpt-0001-000000.pt"}
    assert store.fetch(ref, out_dir) is False  # type: ignore[attr-defined]
    assert not (out_dir / "ckpt-0001-000000.pt").exists()


def test_our_checkpoint_names_are_still_downloaded(tmp_path: Path) -> None:
    """The fix refuses only what is not ours: a real reference still downloads. Seen failing
    with ``fetch`` broken to refuse every reference."""
    store, artifact_id = _store_with_one_upload(tmp_path)
    out_dir = tmp_path / "scratch" / "study" / "trial-0"
    ref = {"id": artifact_id, "file": "ckpt-0003-000017.pt"}
    assert store.fetch(ref, out_dir) is True  # type: ignore[attr-defined]
    assert (out_dir / "ckpt-0003-000017.pt").read_bytes() == b"checkpoint bytes"
