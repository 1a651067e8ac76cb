"""Every ``rs-search ...`` command line in db/ and workers/ (scripts, manifests, READMEs) names a
command that exists, with flags that command has: checked against the CLI itself (the click
command tree behind ``rs_search.cli.main.app``), so a renamed flag breaks this test, not a
user's deployment.

A command line is ``rs-search`` where a shell would run it: at the start of a line or of a
comment's text, after ``$ ``, ``exec``, ``|``, ``;``, ``&&`` or ``(``, or at the start of an
inline code span in Markdown; in a Kubernetes manifest, a container's command and args.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from rs_search.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
KIT = sorted(
    p for d in ("db", "workers") for p in (ROOT / d).rglob("*") if p.is_file() and p.name != ".env"
)
# ``rs-search schema: ...`` (sample output of ``db check``) is not a command: no colon words.
_AT_COMMAND = re.compile(r"(?:^|\$ |\bexec |[|;(`]|&&)\s*rs-search\s+(?![\w-]+:)(?P<rest>.*)")
_ENDS = re.compile(r"[`|;)#]|&&")


def _tree() -> Any:
    """The click command tree (typer builds it with its own copy of click, so it is read by
    shape: a group has ``commands``, an option has ``opts`` that start with ``-``)."""
    command = typer.main.get_command(app)
    assert hasattr(command, "commands")
    return command


def _flags(command: Any) -> set[str]:
    return {
        opt
        for param in command.params
        for opt in [*param.opts, *getattr(param, "secondary_opts", [])]
        if opt.startswith("-")
    }


def _lines(path: Path) -> list[tuple[int, str]]:
    """Logical lines (backslash continuations joined), comment markers stripped."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = re.sub(r"^\s*(?:#|--)\s?", "", raw)
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def _command_lines(path: Path) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for number, line in _lines(path):
        for match in _AT_COMMAND.finditer(line):
            rest = _ENDS.split(match.group("rest"), maxsplit=1)[0]
            try:
                words = shlex.split(rest)
            except ValueError:  # an unbalanced quote: take the words as they stand
                words = rest.split()
            found.append((f"{path.relative_to(ROOT)}:{number}", words))
    if path.suffix == ".yaml" and "kubernetes" in path.parts:
        for document in yaml.safe_load_all(path.read_text()):
            pod = (document or {}).get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                words = [*container.get("command", []), *container.get("args", [])]
                if words[:1] == ["rs-search"]:
                    found.append((f"{path.relative_to(ROOT)}:{container['name']}", words[1:]))
    return found


def _check(words: list[str]) -> str | None:
    """None when the words are a real command with real flags, else what is wrong."""
    command = _tree()
    path: list[str] = []
    root_flags = {"--debug", "--help", "--version"}
    while hasattr(command, "commands"):
        while words and words[0] in root_flags:
            words = words[1:]
        if not words:
            return f"`rs-search {' '.join(path)}` names no command"
        sub = command.commands.get(words[0])
        if sub is None:
            return f"`rs-search {' '.join([*path, words[0]])}`: no such command"
        path.append(words[0])
        command, words = sub, words[1:]
    flags = {"--help", "--debug"} | _flags(command)
    for word in words:
        flag = word.split("=", 1)[0]
        if flag.startswith("-") and flag not in flags:
            return f"`rs-search {' '.join(path)}` has no flag {flag}"
    return None


COMMAND_LINES = [(where, words) for path in KIT for where, words in _command_lines(path)]


def test_the_kit_names_rs_search_commands() -> None:
    named = {" ".join(w[:2]) for _, w in COMMAND_LINES}
    assert {"worker --study", "db upgrade", "db check"} <= named, named


@pytest.mark.parametrize(("where", "words"), COMMAND_LINES, ids=[w for w, _ in COMMAND_LINES])
def test_every_command_line_exists_in_the_cli(where: str, words: list[str]) -> None:
    assert _check(words) is None, f"{where}: {_check(words)}"


def test_the_scripts_pass_only_worker_flags() -> None:
    """torchrun.sh and slurm.sbatch build their flags in variables; all of them go to
    ``rs-search worker`` (but nvidia-smi's own, on the line that counts GPUs)."""
    known = _flags(_tree().commands["worker"])
    for name in ("torchrun.sh", "slurm.sbatch"):
        text = (ROOT / "workers" / name).read_text()
        code = "\n".join(
            line
            for line in text.splitlines()
            if not line.lstrip().startswith("#") and "nvidia-smi" not in line
        )
        flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", code))
        assert flags and flags <= known, (name, flags - known)


@pytest.mark.parametrize(
    "words",
    [["wokrer", "--study", "s"], ["worker", "--studdy", "s"], ["db", "upgrde"], ["db"]],
)
def test_the_check_catches_a_wrong_command_or_flag(words: list[str]) -> None:
    assert _check(words) is not None
