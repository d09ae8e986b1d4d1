"""A small DICOM corpus with reports for the drafting tests (hashing-tiny: fast, not semantic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from tests.reading_helpers import pydicom_file

# (patient, report): studies 0 and 1 share a patient; reports repeat sentences so that neighbours
# agree, and 2-3 say "effusion" where 4 says "no effusion" (a contradiction to settle). Every
# report is written once, so a study is known by its report.
REPORTS = [
    ("P1", "FINDINGS: Small left pleural effusion. Heart size is normal.\nIMPRESSION: Left effusion."),
    ("P1", "FINDINGS: Small left pleural effusion. The lungs are clear.\nIMPRESSION: Left effusion."),
    ("P2", "FINDINGS: Small left pleural effusion. Heart size is normal.\nIMPRESSION: Left pleural effusion."),
    ("P3", "FINDINGS: Small left pleural effusion. Mild cardiomegaly.\nIMPRESSION: Left effusion."),
    ("P4", "FINDINGS: No pleural effusion. Heart size is normal.\nIMPRESSION: No acute disease."),
    ("P5", "FINDINGS: Heart size is normal. No pneumothorax.\nIMPRESSION: No acute disease."),
]
STUDY_UID = "1.2.826.0.1.3680043.8.498.{}"


def build_studies(root: Path) -> Path:
    """One folder per study: a CT slice with its own UIDs, patient and pixels, and report.txt."""
    source = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    rng = np.random.default_rng(0)
    for n, (patient, report) in enumerate(REPORTS):
        folder = root / f"study{n}"
        folder.mkdir(parents=True)
        ds = source.copy()
        ds.PatientID = patient
        ds.StudyInstanceUID = STUDY_UID.format(n)
        ds.SeriesInstanceUID = STUDY_UID.format(n) + ".1"
        ds.SOPInstanceUID = STUDY_UID.format(n) + ".1.1"
        pixels = ds.pixel_array.astype(np.int16)
        ds.PixelData = (pixels + rng.integers(0, 40 * (n + 1), pixels.shape)).astype(np.int16).tobytes()
        ds.save_as(folder / "IM0001.dcm", enforce_file_format=False)
        (folder / "report.txt").write_text(report)
    return root
