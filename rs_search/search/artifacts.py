"""Where a trial's checkpoints live, so that its retry finds them, on this machine or another.

Every trial trains into a local directory ``<root>/<study>/trial-<origin>``, where ``origin`` is
the trial's own number or, for a retry, the number of the trial it retries (``failed_trial``, set
by Optuna's ``RetryHeartbeatStaleTrialCallback``). The engine's ``resume=True`` then continues from
the last good checkpoint there. The store is given by ``--artifacts``:

- a directory (default ``./rs-search-artifacts``, or ``file:///abs/path``): the checkpoints stay
  there. A retry on another machine resumes only if the directory is shared (NFS, a mount);
- an Optuna artifact store by URL, for workers that share nothing but the database:
  ``s3://BUCKET`` (``Boto3ArtifactStore``, needs boto3), ``gs://BUCKET`` (``GCSArtifactStore``,
  needs google-cloud-storage) or ``artifacts:///abs/path`` (``FileSystemArtifactStore``). Training
  still writes to a local scratch directory; after every epoch (and on SIGTERM) the newest
  checkpoint is uploaded with ``optuna.artifacts.upload_artifact`` (so optuna-dashboard lists it
  under the trial), its id is kept in the trial's ``checkpoint_artifact`` user attribute, and the
  previous upload is removed. A retry inherits that attribute and downloads the checkpoint
  before it resumes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import optuna

from rs_search.errors import RsSearchError
from rs_search.study.attrs import CHECKPOINT_ARTIFACT  # trial user attribute: {"id", "file"}
from rs_search.study.names import folder_name

DEFAULT_ROOT = "rs-search-artifacts"
_SCHEMES = ("file", "artifacts", "s3", "gs")
# optuna.artifacts.upload_artifact names an artifact str(uuid.uuid4()).
_ARTIFACT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_log = logging.getLogger("rs_search.search")


@dataclass(frozen=True)
class CheckpointStore:
    """Per-trial checkpoint directories, optionally mirrored to an Optuna artifact store."""

    root: Path  # local: the store itself, or the scratch space under a remote store
    remote_spec: str | None = None  # s3://..., gs://..., artifacts:///...
    _remote: list[Any] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def from_spec(cls, spec: str, *, scratch: str = DEFAULT_ROOT) -> CheckpointStore:
        """Parse ``--artifacts``; creates nothing (validation happens before a study exists)."""
        if "://" not in spec:
            return cls(Path(spec))
        parsed = urlparse(spec)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost") or not parsed.path:
                raise RsSearchError(
                    f"artifact store {spec!r}: use file:///abs/path (a host name would be "
                    "dropped and the path taken from the root)"
                )
            return cls(Path(parsed.path))
        if parsed.scheme not in _SCHEMES:
            raise RsSearchError(
                f"artifact store {spec!r}: unknown scheme {parsed.scheme!r}; "
                "allowed: a directory, file:///PATH, artifacts:///PATH, "
                "s3://BUCKET, gs://BUCKET"
            )
        if parsed.scheme in ("s3", "gs") and not parsed.netloc:
            raise RsSearchError(f"artifact store {spec!r}: the bucket name is missing")
        # artifacts://host/x would put the store at /x: the host part is dropped silently.
        if parsed.scheme == "artifacts" and (parsed.netloc or not parsed.path.startswith("/")):
            raise RsSearchError(
                f"artifact store {spec!r}: use an absolute path, artifacts:///abs/path"
            )
        return cls(Path(scratch), remote_spec=spec)

    @property
    def remote(self) -> Any | None:
        """The Optuna artifact store (built on first use), or None for a plain directory."""
        if self.remote_spec is None:
            return None
        if not self._remote:
            self._remote.append(_open_remote(self.remote_spec))
        return self._remote[0]

    def trial_dir(self, study_name: str, origin: int) -> Path:
        return self.study_dir(study_name) / f"trial-{origin}"

    def study_dir(self, study_name: str) -> Path:
        return self.root / folder_name(study_name)

    # -- mirroring to a remote store ---------------------------------------------------------

    def fetch(self, ref: Mapping[str, Any] | None, out_dir: Path) -> bool:
        """Download the inherited checkpoint ``ref`` (the trial record's ``checkpoint_artifact``)
        into an empty ``out_dir``; True when one came.

        ``ref`` comes from the database, so it is untrusted input (issue 10 audit: a file name
        ``../../x`` or ``/abs/x`` wrote outside the trial folder). Only a checkpoint name this
        project writes and an artifact id of the form Optuna creates are accepted, and the
        resolved target must sit directly in ``out_dir``; anything else is refused with a
        warning, and the trial starts from what ``out_dir`` holds (a fresh start)."""
        from rs_search.train.checkpoint import checkpoint_paths

        if self.remote is None or ref is None or checkpoint_paths(out_dir):
            return False
        target = _download_target(ref, out_dir)
        if target is None:
            _log.warning(
                "trial attribute %s = %s is not a checkpoint this project uploads "
                "(expected {'id': <uuid>, 'file': 'ckpt-EEEE-SSSSSS.pt'}); not downloaded",
                CHECKPOINT_ARTIFACT,
                _shown(ref),
            )
            return False
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            optuna.artifacts.download_artifact(
                artifact_store=self.remote, file_path=str(target), artifact_id=ref["id"]
            )
        except optuna.artifacts.exceptions.ArtifactNotFound:
            return False
        return True

    def push(self, trial: optuna.Trial, out_dir: Path) -> None:
        """Upload the newest checkpoint of ``out_dir`` for ``trial`` and drop the previous one."""
        from rs_search.train.checkpoint import checkpoint_paths

        if self.remote is None:
            return
        paths = checkpoint_paths(out_dir)
        if not paths:
            return
        previous = trial.user_attrs.get(CHECKPOINT_ARTIFACT)
        if isinstance(previous, dict) and previous.get("file") == paths[0].name:
            return
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=self.remote,
            file_path=str(paths[0]),
            study_or_trial=trial,
            mimetype="application/octet-stream",
        )
        trial.set_user_attr(CHECKPOINT_ARTIFACT, {"id": artifact_id, "file": paths[0].name})
        if isinstance(previous, dict) and previous.get("id"):
            try:
                self.remote.remove(str(previous["id"]))
            except Exception:  # noqa: BLE001 - a leftover upload costs space, not correctness
                pass


def _open_remote(spec: str) -> Any:
    parsed = urlparse(spec)
    from optuna import artifacts as oa

    try:
        if parsed.scheme == "s3":
            return oa.Boto3ArtifactStore(parsed.netloc)
        if parsed.scheme == "gs":
            return oa.GCSArtifactStore(parsed.netloc)
    except ImportError as exc:
        raise RsSearchError(f"artifact store {spec!r} needs an extra package: {exc}") from None
    base = Path(parsed.path)
    base.mkdir(parents=True, exist_ok=True)
    return oa.FileSystemArtifactStore(base)


def _download_target(ref: Any, out_dir: Path) -> Path | None:
    """``out_dir / ref["file"]`` when ``ref`` is a well-formed checkpoint reference whose file
    resolves directly inside ``out_dir``; else None."""
    from rs_search.train.checkpoint import is_checkpoint_name

    if not isinstance(ref, Mapping):
        return None
    name, artifact_id = ref.get("file"), ref.get("id")
    if not isinstance(name, str) or not is_checkpoint_name(name):
        return None
    if not isinstance(artifact_id, str) or not _ARTIFACT_ID.fullmatch(artifact_id):
        return None
    target = (out_dir / name).resolve()
    if target.parent != out_dir.resolve():  # belt and braces: a symlinked name, a future regex
        return None
    return target


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
