"""Open a study for reading: one storage per process, an unknown study named in one line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rs_search.errors import StorageError
from rs_search.storage.url import resolve_storage_url

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage
    from sqlalchemy.engine import URL


@dataclass(frozen=True)
class OpenStudy:
    study: optuna.Study
    storage: RDBStorage
    url: URL
    study_id: int


def open_study(name: str, storage: str | None) -> OpenStudy:
    """Load study ``name`` from ``storage`` (flag, ``$RS_SEARCH_STORAGE`` or the default file).

    An unreachable database or an unknown study is a ``StorageError`` listing the studies that
    exist; nothing is created on the way (no tables, no SQLite file)."""
    import optuna

    from rs_search.search.storage import open_storage, study_names, unknown_study_message

    url = resolve_storage_url(storage)
    names = study_names(url)
    if name not in names:
        raise StorageError(unknown_study_message(name, names, url))
    rdb = open_storage(url)
    study = optuna.load_study(study_name=name, storage=rdb)
    return OpenStudy(study=study, storage=rdb, url=url, study_id=rdb.get_study_id_from_name(name))
