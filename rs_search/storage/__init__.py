"""Study storage: one SQLAlchemy URL, masked in every message (DESIGN.md section 3, "Storage")."""

from rs_search.storage.url import DEFAULT_STORAGE, ENV_STORAGE, mask_url, resolve_storage_url

__all__ = ["DEFAULT_STORAGE", "ENV_STORAGE", "mask_url", "resolve_storage_url"]
