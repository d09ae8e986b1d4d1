"""A bounded, private folder of instances fetched from a PACS to be looked at
(radsearch.pacs_fetch).

Each file is named by the SHA-256 of its content, the hash the catalog records for the instance it
indexed, so that a copy is found again without the PACS, and one that the PACS changed since is
never taken for it. The folder is ``$RADSEARCH_PACS_CACHE``, else ``$XDG_CACHE_HOME/radsearch/pacs``
(``~/.cache/radsearch/pacs``), readable by its owner only: the copies are the PACS's instances,
headers included. It holds at most ``$RADSEARCH_PACS_CACHE_MB`` megabytes (default 1024), the
files used least recently going first; 0 keeps only the instance last fetched.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from radsearch.errors import RadsearchError

CACHE_VARIABLE = "RADSEARCH_PACS_CACHE"
LIMIT_VARIABLE = "RADSEARCH_PACS_CACHE_MB"
DEFAULT_LIMIT_MB = 1024
_SUFFIX = ".dcm"


def cache_folder() -> Path:
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "radsearch" / "pacs"


def cache_limit() -> int:
    """The cache's size bound in bytes, from ``$RADSEARCH_PACS_CACHE_MB``."""
    text = os.environ.get(LIMIT_VARIABLE, str(DEFAULT_LIMIT_MB))
    try:
        megabytes = float(text)
    except ValueError:
        raise RadsearchError(f"${LIMIT_VARIABLE}={text!r}: give a number of megabytes") from None
    return max(0, int(megabytes * 2**20))


def content_hash(path: Path) -> str:
    """SHA-256 of a file, hex: the hash the indexer records for what it read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class InstanceCache:
    def __init__(self, folder: Path | None = None, limit_bytes: int | None = None):
        self.folder = folder if folder is not None else cache_folder()
        self.limit_bytes = cache_limit() if limit_bytes is None else limit_bytes
        self._lock = threading.Lock()

    def prepare(self) -> Path:
        """The folder, made owner-only (fetched copies are written inside it, never elsewhere)."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        return self.folder

    def get(self, sha256: str) -> Path | None:
        """The cached copy whose content hash is ``sha256``, marked as just used; None if absent."""
        path = self.folder / f"{sha256}{_SUFFIX}"
        try:
            os.utime(path)  # its time orders the eviction
        except FileNotFoundError:
            return None
        return path

    def put(self, fetched: Path) -> tuple[str, Path]:
        """Move ``fetched`` (a file inside the folder) in under its content hash; returns the hash
        and the cached path. Older copies go until the folder is within its bound."""
        sha256 = content_hash(fetched)
        target = self.folder / f"{sha256}{_SUFFIX}"
        os.chmod(fetched, 0o600)
        os.replace(fetched, target)
        self._evict(keep=target)
        return sha256, target

    def _evict(self, keep: Path) -> None:
        with self._lock:
            entries = []
            for path in self.folder.glob(f"*{_SUFFIX}"):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # evicted by another process meanwhile
                entries.append((stat.st_mtime_ns, stat.st_size, path))
            total = sum(size for _, size, _ in entries)
            for _, size, path in sorted(entries):
                if total <= self.limit_bytes:
                    return
                if path != keep:  # the copy just fetched is about to be read
                    path.unlink(missing_ok=True)
                    total -= size
