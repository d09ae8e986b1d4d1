"""A small real corpus for indexer tests, assembled in a temporary folder from real files."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from pydicom.data import get_testdata_file

MEDPIX_IMAGES = 6
SERIES = "dicom_series/dicom2nifti/generic/compressed_rle/001"


def build_corpus(root: Path, shared_data: Path, medpix_images: int = MEDPIX_IMAGES) -> dict:
    """Write a mixed corpus under ``root``; returns what a test needs to know about it."""
    dicom = root / "dicom"
    dicom.mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm", "rtstruct.dcm", "test-SR.dcm"):
        shutil.copy(get_testdata_file(name), dicom / name)
    # A DICOM file without extension: found by its content.
    shutil.copy(get_testdata_file("JPEG2000.dcm"), dicom / "IM0001")
    series_dir = root / "series"
    shutil.copytree(shared_data / SERIES, series_dir)

    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.dcm").write_bytes(b"")
    (bad / "noise.dcm").write_bytes(os.urandom(4096))
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (bad / "truncated.dcm").write_bytes(ct[: len(ct) // 2])

    medpix = root / "medpix"
    (medpix / "images").mkdir(parents=True)
    with open(shared_data / "medpix2" / "manifest.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["weak_caption"] == "False"]
    # Distinct cases, so that each caption names one study.
    chosen = list({row["case_id"]: row for row in rows}.values())[:medpix_images]
    for row in chosen:
        shutil.copy(shared_data / "medpix2" / row["image_path"], medpix / row["image_path"])
    reports_csv = root / "medpix_reports.csv"
    with open(reports_csv, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["image_path", "text", "modality", "view"])
        for row in chosen:
            out.writerow([f"medpix/{row['image_path']}", row["text"], row["modality"], row["view"]])
    return {
        "reports_csv": reports_csv,
        "medpix": chosen,
        "bad": {"empty.dcm": "empty file", "noise.dcm": "not a dicom", "truncated.dcm": "truncated"},
        "series_files": len(list(series_dir.iterdir())),
    }
