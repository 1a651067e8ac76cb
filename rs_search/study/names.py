"""What a study name may be, and the one folder name a study's files go under.

A study's name travels far: it is a folder on every worker machine (checkpoints, worker logs), a
word in the shell commands ``start`` prints, text that rich prints, and a value in Optuna's
``study_name`` column (VARCHAR(512) on PostgreSQL). Before this rule a name like ``a[/b]`` or
200 unicode characters was accepted, created the study and its queue, and only then failed
(a rich markup error, a nested or over-long folder name; issue 10, audit).

So a name that ``start`` creates (or resumes) must satisfy :data:`RULE`, checked before
anything is created. Studies made elsewhere (plain Optuna, an older rs-search) may carry any
name: ``worker``, ``status``, ``export`` still open them by name, and :func:`folder_name` gives
their files one safe, collision-free folder.
"""

from __future__ import annotations

import hashlib
import re

from rs_search.errors import RsSearchError

__all__ = ["MAX_LENGTH", "RULE", "StudyNameError", "check_study_name", "folder_name"]

MAX_LENGTH = 100
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_LENGTH - 1}}}")
RULE = (
    f"1 to {MAX_LENGTH} characters: ASCII letters, digits, '.', '_' and '-', "
    "starting with a letter or a digit"
)


class StudyNameError(RsSearchError):
    """A study name that ``start`` must not create."""


def check_study_name(name: str, *, where: str = "--study") -> str:
    """``name`` when it satisfies :data:`RULE`, else one ``StudyNameError`` line naming it
    (shortened and escaped: the name itself may hold newlines or 300 characters)."""
    if _NAME.fullmatch(name):
        return name
    shown = repr(name) if len(name) <= 40 else repr(name[:37]) + "..."
    raise StudyNameError(f"{where} {shown}: a study name is {RULE}")


def folder_name(name: str) -> str:
    """The folder a study's files go under: the name itself when it satisfies :data:`RULE`,
    otherwise its safe characters (at most 40) and a digest of the whole name, so that two
    names never share a folder (``a/b`` and ``a_b`` would, by replacement alone) and no name
    becomes ``..``, an absolute path or a component longer than a file system allows."""
    if _NAME.fullmatch(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:40].lstrip(".-") or "study"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cleaned}-{digest}"
