"""Non-image DICOM objects: structured reports give text, the others are skipped with a reason."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from reading_helpers import edited_copy, pydicom_file, read

from radsearch.reading import SkipFile


def test_comprehensive_sr_report_text() -> None:
    result = read(pydicom_file("test-SR.dcm"))
    assert result.frames == [] and result.kind == "dicom"
    text = result.report_text
    assert text is not None
    assert text.startswith("DIAGNOSIS:")
    for expected in ["A mass of", "Diameter: 3 cm", "was detected.", "Code: Sample Code 1",
                     "Inferred Sample Text\nNew line."]:
        assert expected in text
    assert "\r" not in text
    assert result.metadata["modality"] == "SR"
    assert result.metadata["sop_class"] == "Comprehensive SR Storage"
    assert result.metadata["rows"] is None and result.metadata["n_frames"] is None
    assert result.study_uid_hash is not None


def test_basic_text_sr_sections_without_observer_context() -> None:
    text = read(pydicom_file("reportsi.dcm")).report_text
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == "DOCUMENT TITLE:"
    assert "SECTION HEADING:" in lines
    assert lines[lines.index("SECTION HEADING:") + 1] == "Enter text"
    assert "Observer" not in text and "Observation Context" not in text


def _plant_observer_name(ds: pydicom.Dataset) -> None:
    for item in ds.ContentSequence:
        if item.ValueType == "PNAME":
            item.PersonName = "Zyxwvut^Observer"
        if item.ValueType == "TEXT" and item.RelationshipType == "HAS OBS CONTEXT":
            item.TextValue = "Qwertyuiop Hospital"


def test_sr_observer_names_and_organisations_are_left_out(tmp_path: Path) -> None:
    result = read(edited_copy("reportsi.dcm", tmp_path, _plant_observer_name))
    assert "Zyxwvut" not in repr(result) and "Qwertyuiop" not in repr(result)


def test_sr_without_text_is_skipped(tmp_path: Path) -> None:
    def empty(ds: pydicom.Dataset) -> None:
        ds.ContentSequence = []

    with pytest.raises(SkipFile, match="without text"):
        read(edited_copy("reportsi.dcm", tmp_path, empty))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("rtstruct.dcm", "RT Structure Set Storage"),
        ("rtplan.dcm", "RT Plan Storage"),
        ("rtdose.dcm", "RT Dose Storage"),
        ("liver_1frame.dcm", "Segmentation Storage"),
        ("waveform_ecg.dcm", "12-lead ECG Waveform Storage"),
        ("ExplVR_LitEndNoMeta.dcm", "RT Ion Plan Storage"),
    ],
)
def test_non_image_objects_are_skipped(name: str, expected: str) -> None:
    with pytest.raises(SkipFile) as info:
        read(pydicom_file(name))
    assert expected in str(info.value) and str(info.value).startswith("not an image")


@pytest.mark.parametrize(
    ("sop_class", "expected"),
    [
        ("1.2.840.10008.5.1.4.1.1.88.59", "key object selection"),
        ("1.2.840.10008.5.1.4.1.1.11.1", "presentation state"),
        ("1.2.840.10008.5.1.4.1.1.104.1", "encapsulated document"),
        ("1.2.840.10008.5.1.4.1.1.66", "raw data"),
    ],
)
def test_skipped_by_sop_class_even_with_pixel_data(
    tmp_path: Path, sop_class: str, expected: str
) -> None:
    def relabel(ds: pydicom.Dataset) -> None:
        ds.SOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPClassUID = sop_class

    with pytest.raises(SkipFile, match=expected):
        read(edited_copy("CT_small.dcm", tmp_path, relabel))


def test_dicomdir_is_skipped() -> None:
    with pytest.raises(SkipFile, match="DICOMDIR"):
        read(pydicom_file("DICOMDIR"))
