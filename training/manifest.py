"""Training manifests: CSV files of image-text pairs.

Columns: ``image`` or ``image_path`` (PNG/JPEG or DICOM, relative to the manifest's folder unless
absolute), ``text``, and optionally ``split`` (train / dev / test; rows without one are training
rows) and ``group`` or ``case`` (the case or patient a row belongs to; rows of one group must stay
on one side of a split). Other columns are ignored.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from radsearch.errors import RadsearchError

IMAGE_COLUMNS = ("image", "image_path")
GROUP_COLUMNS = ("group", "case")
DEFAULT_SPLIT = "train"


class ManifestError(RadsearchError, ValueError):
    """A manifest that cannot be used; the message names the file and, where known, the row."""


@dataclass(frozen=True)
class Pair:
    image: Path  # absolute
    text: str
    split: str
    group: str | None
    source: str  # the manifest's file stem, to evaluate each source on its own
    split_given: bool = True  # False: the manifest has no split column (``split`` is the default)
    case_texts: tuple[str, ...] = ()  # the case's other texts (training only)


def read_manifest(path: Path) -> list[Pair]:
    """Every row of one manifest CSV, image paths resolved against the manifest's folder."""
    path = Path(path)
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as e:
        raise ManifestError(f"{path}: cannot open ({e.strerror or type(e).__name__})") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        image_column = next((c for c in IMAGE_COLUMNS if c in columns), None)
        if image_column is None or "text" not in columns:
            raise ManifestError(
                f"{path}: needs an 'image' (or 'image_path') and a 'text' column; found {columns}"
            )
        group_column = next((c for c in GROUP_COLUMNS if c in columns), None)
        pairs = []
        # Row 1 is the header, so data rows are numbered from 2 as in a spreadsheet.
        for line, row in enumerate(reader, start=2):
            image, text = (row.get(image_column) or "").strip(), (row.get("text") or "").strip()
            if not image or not text:
                raise ManifestError(f"{path}, row {line}: empty {image_column!r} or 'text'")
            split = (row.get("split") or "").strip().lower() or DEFAULT_SPLIT
            group = ((row.get(group_column) or "").strip() or None) if group_column else None
            case_texts = tuple(t.strip() for t in (row.get("case_texts") or "").splitlines() if t.strip())
            pairs.append(Pair((path.parent / image).resolve(), text, split, group, path.stem,
                              split_given="split" in columns, case_texts=case_texts))
    return pairs


def read_manifests(paths: Iterable[Path]) -> list[Pair]:
    """The rows of several manifests, in order."""
    return [pair for path in paths for pair in read_manifest(path)]


def select_split(pairs: Sequence[Pair], split: str) -> list[Pair]:
    return [pair for pair in pairs if pair.split == split]


def select_eval_split(pairs: Sequence[Pair], split: str) -> list[Pair]:
    """The rows an evaluation of ``split`` uses: that split's rows, and every row of a manifest
    with no split column (nothing in it was set aside, so all of it is evaluated, in every eval)."""
    return [pair for pair in pairs if pair.split == split or not pair.split_given]


def check_groups(pairs: Sequence[Pair]) -> None:
    """Refuse manifests where one group (case, patient) sits in two splits: it would leak."""
    seen: dict[tuple[str, str], str] = {}
    for pair in pairs:
        if pair.group is None:
            continue
        key = (pair.source, pair.group)
        if seen.setdefault(key, pair.split) != pair.split:
            raise ManifestError(
                f"{pair.source}: group {pair.group!r} is in both {seen[key]!r} and {pair.split!r}"
            )
