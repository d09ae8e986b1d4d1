"""Report text from files beside the images (sidecar, folder report) and from reports CSVs is
de-identified when it meets its study, before it is split, embedded and stored.

A DICOM Structured Report is cleaned when it is read, by the Scrubber of its own header. A report
file has no header: it is cleaned of the identifiers of the DICOM files of the study it reports on
(a folder report that repeats its DICOM's name, ID and birth date), then by the identifier rules
(``reading.deid``), which are all a PNG/JPEG study has.
"""

from __future__ import annotations

import sqlite3

from radsearch.reading.phi import Scrubber

_HEADERS_PER_STUDY = 32  # one file per series: a study's identifiers are its patient's


def deidentify_report(conn: sqlite3.Connection, study_id: int, text: str) -> str:
    """``text`` without the identifiers of study ``study_id``'s DICOM files or the rules' finds."""
    if not text:
        return text
    paths = [row[0] for row in conn.execute(
        "SELECT path FROM files WHERE kind = 'dicom' AND id IN ("
        "SELECT MIN(file_id) FROM images WHERE study_id = ? GROUP BY series_id "
        "UNION SELECT file_id FROM reports WHERE study_id = ? AND source = 'sr') "
        "ORDER BY id LIMIT ?",
        (study_id, study_id, _HEADERS_PER_STUDY),
    )]
    return Scrubber.of_files(paths).text(text) or ""
