"""Walk a folder and find the files an index run reads: DICOM (by content), PNG, JPEG, reports."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from radsearch.reading import detect_kind
from radsearch.reports import folder_report, sidecar_for_image

# Files with these extensions are meant to be images: when their content is not, that is reported.
_IMAGE_EXTENSIONS = {".dcm", ".dicom", ".dic", ".ima", ".png", ".jpg", ".jpeg"}
_REPORT_EXTENSIONS = {".txt", ".json"}


@dataclass(frozen=True)
class FoundFile:
    path: str  # absolute path
    dir: str
    size: int
    mtime_ns: int
    kind: str  # dicom | dicomdir | png | jpeg | report | bad
    problem: str | None = None  # why a "bad" file cannot be read

    @property
    def is_image(self) -> bool:
        return self.kind in ("dicom", "png", "jpeg")


def discover(root: Path) -> list[FoundFile]:
    """Every file under ``root`` that an index run reads or reports, sorted by path.

    Symbolic links are followed, but a directory is entered once only, so link loops end.
    """
    root = Path(os.path.abspath(root))
    if root.is_file():
        found = _classify(root)
        return [found] if found else []
    if not root.is_dir():
        return [FoundFile(str(root), str(root.parent), -1, 0, "bad", "no such file or folder")]
    seen_dirs: set[tuple[int, int]] = set()
    results: list[FoundFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=None):
        try:
            info = os.stat(dirpath)
        except OSError:
            continue
        identity = (info.st_dev, info.st_ino)
        if identity in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(identity)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            found = _classify(Path(dirpath) / name)
            if found is not None:
                results.append(found)
    results.sort(key=lambda f: f.path)
    return results


def _classify(path: Path) -> FoundFile | None:
    suffix = path.suffix.lower()
    try:
        info = path.stat()
    except OSError as error:
        if suffix in _IMAGE_EXTENSIONS or suffix == "":
            return FoundFile(str(path), str(path.parent), -1, 0, "bad", _os_reason(error))
        return None
    base = (str(path), str(path.parent), info.st_size, info.st_mtime_ns)
    if suffix in _REPORT_EXTENSIONS:
        if _is_report(path):
            return FoundFile(*base, "report")
        return None
    try:
        kind = detect_kind(path)
    except OSError as error:
        return FoundFile(*base, "bad", _os_reason(error))
    if kind is not None:
        return FoundFile(*base, kind)
    if suffix in _IMAGE_EXTENSIONS:
        reason = "empty file (0 bytes)" if info.st_size == 0 else "not a DICOM, PNG or JPEG file"
        return FoundFile(*base, "bad", reason)
    return None


def _is_report(path: Path) -> bool:
    if folder_report(path.parent) == path:
        return True
    for suffix in (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG"):
        image = path.with_suffix(suffix)
        if image.exists() and sidecar_for_image(image) == path:
            return True
    return False


def _os_reason(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "unreadable: permission denied"
    return f"unreadable: {error.strerror or error}"
