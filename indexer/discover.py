"""Walk a folder and find the files an index run reads: DICOM (by content), PNG, JPEG, reports;
with ``--shard i/n``, keep those of this machine's studies."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from radsearch.errors import RadsearchError
from radsearch.reading import detect_kind
from radsearch.reading.nifti import nifti_name, not_nifti_reason
from radsearch.reading.phi import read_header
from radsearch.reading.types import special_file_reason
from radsearch.reading.values import as_text
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
    kind: str  # dicom | dicomdir | png | jpeg | report | special | bad | other
    # why a "bad" file cannot be read, or a "special" one is not; an "other" file's kind (file_kind)
    problem: str | None = None

    @property
    def is_image(self) -> bool:
        return self.kind in ("dicom", "nifti", "png", "jpeg")


def check_root(root: Path) -> None:
    """A root that does not exist (a typo) is an error before any index is opened: nothing about
    it may be recorded."""
    if not os.path.isdir(root) and not os.path.isfile(root):
        raise RadsearchError(f"{root}: no such file or folder (nothing was indexed)")


def discover(root: Path) -> list[FoundFile]:
    """Every file under ``root`` that an index run reads or reports, sorted by path.

    Symbolic links are followed, but a directory is entered once only, so link loops end.
    """
    root = Path(os.path.abspath(root))
    if root.is_file():
        found = _classify(root)
        return [found] if found else []
    check_root(root)
    seen_dirs: set[tuple[int, int]] = set()
    results: list[FoundFile] = []

    def unreadable_folder(error: OSError) -> None:
        # A folder that cannot be listed is one failure line, not a silent gap.
        folder = error.filename or str(root)
        results.append(FoundFile(_display(folder), str(Path(folder).parent), -1, 0, "bad",
                                 _os_reason(error)))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable_folder):
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


def _display(path: str) -> str:
    """A path SQLite can store: bytes that are not UTF-8 shown as backslash escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _classify(path: Path) -> FoundFile | None:
    suffix = path.suffix.lower()
    if _display(str(path)) != str(path):
        if suffix in _IMAGE_EXTENSIONS or suffix in _REPORT_EXTENSIONS or suffix == "":
            return FoundFile(_display(str(path)), _display(str(path.parent)), -1, 0, "bad",
                             "file name is not valid UTF-8: rename the file")
        return None
    try:
        info = path.stat()
    except OSError as error:
        if suffix in _IMAGE_EXTENSIONS or suffix == "":
            return FoundFile(str(path), str(path.parent), -1, 0, "bad", _os_reason(error))
        return None
    base = (str(path), str(path.parent), info.st_size, info.st_mtime_ns)
    special = special_file_reason(info.st_mode)
    if special is not None:  # never opened: a named pipe would block the run (and its lock)
        return FoundFile(*base, "special", special)
    if suffix in _REPORT_EXTENSIONS:
        if _is_report(path):
            return FoundFile(*base, "report")
        return FoundFile(*base, "other", file_kind(path))
    try:
        kind = detect_kind(path)
    except OSError as error:
        return FoundFile(*base, "bad", _os_reason(error))
    if kind is not None:
        return FoundFile(*base, kind)
    if suffix in _IMAGE_EXTENSIONS:
        reason = "empty file (0 bytes)" if info.st_size == 0 else "not a DICOM, PNG or JPEG file"
        return FoundFile(*base, "bad", reason)
    if nifti_name(path):
        return FoundFile(*base, "bad", not_nifti_reason(path))
    return FoundFile(*base, "other", file_kind(path))


def file_kind(path: Path) -> str:
    """What a file that is neither an image nor a report is, for the summary's skipped counts:
    its extension (both parts of a compressed one, e.g. '.tar.gz'), or 'no extension'."""
    suffixes = [suffix.lower() for suffix in path.suffixes[-2:]]
    if len(suffixes) == 2 and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst"):
        return "".join(suffixes)
    return suffixes[-1] if suffixes else "no extension"


def _is_report(path: Path) -> bool:
    if folder_report(path.parent) == path:
        return True
    for suffix in (".png", ".jpg", ".jpeg", ".nii", ".nii.gz", ".PNG", ".JPG", ".JPEG", ".NII",
                   ".NII.GZ"):
        image = path.with_suffix(suffix)
        if image.exists() and sidecar_for_image(image) == path:
            return True
    return False


def _os_reason(error: OSError) -> str:
    if isinstance(error, PermissionError):
        return "unreadable: permission denied"
    return f"unreadable: {error.strerror or error}"


@dataclass(frozen=True)
class Shard:
    """Shard ``number`` of ``count`` (1-based, written "i/n"): every study belongs to one shard.

    A DICOM study is placed by an unsalted hash of its Study Instance UID, read from the header, so
    that every machine computes the same placement and a study split over folders stays on one
    machine; anything else (PNG/JPEG, a DICOM file without the UID) by its folder relative to the
    indexed root - the unit of a PNG/JPEG study. A folder's report file goes with the folder's
    DICOM study when it has one. All machines must index the same root.
    """

    number: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise RadsearchError(f"--shard {text!r}: use i/n with 1 <= i <= n, e.g. 2/3")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.number}/{self.count}"

    def owns(self, key: str) -> bool:
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.number - 1


class ShardFilter:
    """Which discovered files belong to one shard's studies."""

    def __init__(self, shard: Shard, root: Path, found: list[FoundFile]):
        self.shard = shard
        self.root = root if root.is_dir() else root.parent
        self._first_dicom: dict[str, str] = {}
        for item in found:
            if item.kind == "dicom":
                self._first_dicom.setdefault(item.dir, item.path)

    def owns(self, item: FoundFile) -> bool:
        return self.shard.owns(self.key(item))

    def key(self, item: FoundFile) -> str:
        if item.kind == "dicom":
            uid = _study_uid(item.path)
        elif item.kind == "report" and item.dir in self._first_dicom:
            uid = _study_uid(self._first_dicom[item.dir])
        else:
            uid = None
        if uid:
            return f"study:{uid}"
        return "folder:" + Path(os.path.relpath(item.dir, self.root)).as_posix()


@lru_cache(maxsize=4096)
def _study_uid(path: str) -> str | None:
    """The file's Study Instance UID, read within bounds (a hostile header cannot make this
    allocate more than the file holds); None when it cannot be read."""
    header = read_header(path, ["StudyInstanceUID"])
    return as_text(header.get("StudyInstanceUID")) if header is not None else None
