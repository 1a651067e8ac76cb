"""The import graph keeps the data flowing one way (DESIGN.md section 2, issue 13).

Read with ``ast`` over ``rs_search/`` (nothing is imported):

1. only the study layer (``rs_search/study/``) imports ``FrozenTrial``/``TrialState`` (anything of
   ``optuna.trial``) or reads a trial or study attribute by a literal name
   (``user_attrs.get("...")``, ``user_attrs["..."]``, ``"..." in user_attrs``,
   ``set_user_attr("...", ...)``, the same for system attributes): the names live in
   ``rs_search.study.attrs`` and a stored trial is read once, into a ``TrialRecord``;
2. only the storage side of the study layer (``study/storage.py``, ``rdb.py``, ``queue.py``)
   touches Optuna's private names (``study._storage``, ``trial._trial_id``, ...);
3. ``selection/`` is pure: it imports nothing from ``search/``, the study layer's storage side,
   the CLI, or a database;
4. ``selection/``, ``export/`` and ``reports/`` take records: they import neither Optuna nor the
   study layer's storage side, and never read trials off a study (``get_trials``);
5. the study layer imports nothing above it (the search, selection, export, reports, the CLI,
   training or latency measurement): it is what they all stand on;
6. nothing below the CLI imports the CLI.

The checker is tested on small synthetic sources below, so each rule can fail.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "rs_search"

STUDY_LAYER = "rs_search.study"
STORAGE_SIDE = ("rs_search.study.storage", "rs_search.study.rdb", "rs_search.study.queue")
TAKE_RECORDS = ("rs_search.selection", "rs_search.export", "rs_search.reports")
ABOVE_STUDY = (
    "rs_search.search",
    "rs_search.selection",
    "rs_search.export",
    "rs_search.reports",
    "rs_search.cli",
    "rs_search.train",
    "rs_search.latency",
)
ATTR_CONTAINERS = {"user_attrs", "system_attrs"}
ATTR_SETTERS = {"set_user_attr", "set_system_attr", "set_trial_user_attr", "set_trial_system_attr"}
# Optuna's private names the storage facade is allowed to use (Optuna 5.1).
OPTUNA_PRIVATE = {
    "_storage",
    "_backend",
    "_study_id",
    "_trial_id",
    "_pop_waiting_trial_id",
    "_thread_local",
    "_get_trials",
    "_create_new_trial",
    "_set_trial_param",
    "_get_best_trial_id",
    "_get_stale_trial_ids",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every import, lazy ones included."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
    return out


def _literal(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _attr_name(node: ast.AST) -> str | None:
    return node.attr if isinstance(node, ast.Attribute) else None


def violations(module: str, source: str) -> list[str]:
    """Every rule of the module docstring that ``source`` (module ``module``) breaks."""
    tree = ast.parse(source)
    found: list[str] = []
    in_study = _within(module, STUDY_LAYER)
    in_storage_side = any(_within(module, m) for m in STORAGE_SIDE)
    takes_records = any(_within(module, p) for p in TAKE_RECORDS)
    in_selection = _within(module, "rs_search.selection")

    for line, imported, names in _imports(tree):
        if not in_study and (
            _within(imported, "optuna.trial")
            or (imported == "optuna" and "trial" in names)
            or "FrozenTrial" in names
        ):
            found.append(f"{module}:{line}: imports {imported} (trials are read as records)")
        if in_selection and (
            _within(imported, "rs_search.search")
            or _within(imported, "rs_search.cli")
            or _within(imported, "rs_search.storage")
            or _within(imported, "rs_search.latency")
            or _within(imported, "sqlalchemy")
            or any(_within(imported, m) for m in STORAGE_SIDE)
        ):
            found.append(f"{module}:{line}: selection imports {imported} (it must stay pure)")
        if takes_records and (
            _within(imported, "optuna") or any(_within(imported, m) for m in STORAGE_SIDE)
        ):
            found.append(f"{module}:{line}: imports {imported} (this package takes records)")
        if in_study and any(_within(imported, p) for p in ABOVE_STUDY):
            found.append(f"{module}:{line}: the study layer imports {imported} (above it)")
        if not _within(module, "rs_search.cli") and _within(imported, "rs_search.cli"):
            found.append(f"{module}:{line}: imports the CLI ({imported})")

    for node in ast.walk(tree):
        if not in_study:
            if (
                isinstance(node, ast.Call)
                and _attr_name(node.func) == "get"
                and _attr_name(node.func.value) in ATTR_CONTAINERS  # type: ignore[attr-defined]
                and node.args
                and _literal(node.args[0])
            ) or (
                isinstance(node, ast.Call)
                and _attr_name(node.func) in ATTR_SETTERS
                and node.args
                and _literal(node.args[0])
            ):
                found.append(f"{module}:{node.lineno}: names an attribute by a literal string")
            if (
                isinstance(node, ast.Subscript)
                and _attr_name(node.value) in ATTR_CONTAINERS
                and _literal(node.slice)
            ) or (
                isinstance(node, ast.Compare)
                and _literal(node.left)
                and any(_attr_name(c) in ATTR_CONTAINERS for c in node.comparators)
            ):
                found.append(f"{module}:{node.lineno}: names an attribute by a literal string")
            if _attr_name(node) == "trial" and isinstance(node, ast.Attribute):
                if isinstance(node.value, ast.Name) and node.value.id == "optuna":
                    found.append(f"{module}:{node.lineno}: uses optuna.trial")
        if not in_storage_side and _attr_name(node) in OPTUNA_PRIVATE:
            found.append(
                f"{module}:{node.lineno}: touches Optuna's private {_attr_name(node)} "
                "(only rs_search.study's storage side may)"
            )
        if takes_records and _attr_name(node) == "get_trials":
            found.append(f"{module}:{node.lineno}: reads trials off a study (take records)")
    return found


def test_rs_search_keeps_the_layers() -> None:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        found.extend(violations(module_name(path), path.read_text()))
    assert found == [], "\n".join(found)


# -- the checker itself -------------------------------------------------------------------------

PLANTED = [
    ("rs_search.search.x", "from optuna.trial import FrozenTrial\n", "imports optuna.trial"),
    ("rs_search.export.x", "from optuna import trial\n", "imports optuna"),
    ("rs_search.reports.x", "import optuna.trial\n", "imports optuna.trial"),
    ("rs_search.search.x", "def f(t):\n    return optuna.trial.TrialState\n", "optuna.trial"),
    ("rs_search.search.x", "def f(t):\n    return t.user_attrs.get('curve')\n", "literal"),
    ("rs_search.latency.x", "def f(t):\n    return t.user_attrs['arch']\n", "literal"),
    ("rs_search.search.x", "def f(t):\n    return 'seed_name' in t.user_attrs\n", "literal"),
    ("rs_search.search.x", "def f(t):\n    t.set_user_attr('worker', 1)\n", "literal"),
    ("rs_search.search.x", "def f(t):\n    return t.system_attrs.get('failed_trial')\n", "literal"),
    ("rs_search.selection.x", "from rs_search.search import halving\n", "must stay pure"),
    ("rs_search.selection.x", "from rs_search.study.queue import QueuedStudy\n", "pure"),
    ("rs_search.reports.x", "from rs_search.study.storage import open_study\n", "takes records"),
    ("rs_search.export.x", "def f(study):\n    return study.get_trials()\n", "take records"),
    ("rs_search.search.x", "def f(study):\n    return study._storage\n", "private _storage"),
    ("rs_search.study.read", "def f(t):\n    return t._trial_id\n", "private _trial_id"),
    ("rs_search.train.x", "from rs_search.cli import main\n", "imports the CLI"),
    ("rs_search.study.read", "from rs_search.search import halving\n", "above it"),
]


@pytest.mark.parametrize(("module", "source", "words"), PLANTED)
def test_the_checker_finds_a_planted_violation(module: str, source: str, words: str) -> None:
    found = violations(module, source)
    assert found and words in found[0], found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("rs_search.study.record", "from optuna.trial import FrozenTrial\n"),
        ("rs_search.study.queue", "def f(s):\n    return s._storage, s.user_attrs.get('x')\n"),
        (
            "rs_search.search.x",
            "from rs_search.study import attrs\nx = t.user_attrs.get(attrs.ARCH)\n",
        ),
        ("rs_search.selection.x", "from rs_search.study.record import TrialRecord\n"),
        ("rs_search.cli.x", "from rs_search.cli import _common\n"),
    ],
)
def test_the_checker_allows_what_the_layers_allow(module: str, source: str) -> None:
    assert violations(module, source) == []
