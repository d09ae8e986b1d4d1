"""Which study a PNG/JPEG image belongs to: PNG and JPEG files carry no study UID, so the folder
layout, the report files beside them and the reports CSV decide.

In order, the first rule that applies:
1. a reports-CSV row keying the image, or its nearest folder up to the indexed root, with a value in
   the CSV's group column: the study of that value (``group:`` + a salted hash of it);
2. a CSV row keying the image itself: a study of its own;
3. a study taken from a CSV by an earlier run (a group study, or one that holds a CSV report) is kept
   while this run's CSV says nothing about the image, so a run without ``--reports`` regroups nothing;
4. its own report (``X.txt``/``X.json`` beside ``X.png``): a study of its own;
5. a CSV row keying an enclosing folder, or a ``report.txt``/``report.json`` in the image's folder:
   that folder is one study;
6. an image lying directly in the indexed folder (a flat folder of unrelated images): a study of its
   own; an image in a subfolder of it: one study per subfolder (a folder per study).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from radsearch.indexer.discover import FoundFile
from radsearch.reading import ReadResult, salted_hash
from radsearch.reports import CsvMatch, CsvReports, folder_report, sidecar_for_image

RASTER_KINDS = ("png", "jpeg", "nifti")  # files without study UIDs: NIfTI volumes are grouped alike


def file_study(path: str) -> str:
    return f"file:{path}"


def folder_study(folder: str) -> str:
    return f"dir:{folder}"


def group_study(value: str, salt: str) -> str:
    # Hashed: a group column often holds accession numbers or patient IDs.
    return "group:" + salted_hash(value, salt)


@dataclass(frozen=True)
class StoredStudy:
    """An image's study in the index before this run."""

    key: str
    from_csv: bool  # a group study, or one holding a CSV report


@dataclass
class Grouping:
    keys: dict[str, str] = field(default_factory=dict)  # PNG/JPEG path -> study key
    matches: dict[str, CsvMatch] = field(default_factory=dict)  # image path -> its CSV row
    flat: set[str] = field(default_factory=set)  # a study each only for lying in the indexed folder
    grouped: set[str] = field(default_factory=set)  # grouped by the CSV's group column

    def place(self, found: FoundFile, result: ReadResult) -> tuple[str, str, dict]:
        """A decoded file's study key, series key and metadata: a DICOM file's by its UIDs (hashed),
        another's by this grouping, with its CSV row's columns (modality, view...) over what the
        file says."""
        metadata = dict(result.metadata)
        if result.kind == "dicom":
            study_key = result.study_uid_hash or file_study(found.path)
            series_key = result.series_uid_hash or f"{study_key}/file:{found.path}"
            return study_key, series_key, metadata
        match = self.matches.get(found.path)
        if match is not None:
            for name, value in match.report.metadata.items():
                if value:
                    metadata["study_description" if name == "description" else name] = value
        key = self.keys[found.path]
        if result.kind == "nifti":  # a NIfTI file is a series of its own within its study
            return key, f"{key}/file:{found.path}", metadata
        return key, key, metadata


def group_images(
    images: list[FoundFile],
    root: Path,
    csv_reports: CsvReports | None,
    stored: dict[str, StoredStudy],
    salt: str,
) -> Grouping:
    """Study keys of the PNG/JPEG ``images`` (see the module doc), and the CSV row of every image
    (DICOM included: a CSV row may key a DICOM file or folder)."""
    grouping = Grouping()
    folder_reports: dict[str, bool] = {}
    for item in images:
        match = csv_reports.match(Path(item.path), root) if csv_reports is not None else None
        if match is not None:
            grouping.matches[item.path] = match
        if item.kind not in RASTER_KINDS:
            continue
        if item.dir not in folder_reports:
            folder_reports[item.dir] = folder_report(Path(item.dir)) is not None
        previous = stored.get(item.path)
        if match is not None and match.report.group is not None:
            key = group_study(match.report.group, salt)
            grouping.grouped.add(item.path)
        elif match is not None and match.own:
            key = file_study(item.path)
        elif match is None and previous is not None and previous.from_csv:
            key = previous.key
        elif sidecar_for_image(Path(item.path)) is not None:
            key = file_study(item.path)
        elif match is not None:
            key = folder_study(str(match.keyed))
        elif folder_reports[item.dir]:
            key = folder_study(item.dir)
        elif _directly_in(item, root):
            key = file_study(item.path)
            grouping.flat.add(item.path)
        else:
            key = folder_study(item.dir)
        grouping.keys[item.path] = key
    return grouping


def _directly_in(item: FoundFile, root: Path) -> bool:
    # An image given as the root itself is a study of its own too.
    return item.path == str(root) or item.dir == str(root)
