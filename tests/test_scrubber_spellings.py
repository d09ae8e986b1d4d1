"""The file's own identifiers in the other spellings people type them, and metadata fields that
hold only their vocabulary."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from radsearch import terms
from radsearch.reading.field_values import VOCABULARIES, known_value, safe_field_values
from radsearch.reading.phi import Scrubber


@pytest.fixture(scope="module")
def scrubber() -> Scrubber:
    ds = Dataset()
    ds.PatientName = "Zyxwvut^Qponmlk^Jhgfedc"
    ds.PatientID = "PID-83920471"
    ds.AccessionNumber = "ACC77123409"
    ds.OtherPatientIDs = "OPID-5512093"
    ds.PatientBirthDate = "19020304"
    return Scrubber(ds)


SPELLINGS = [
    # names joined to other words, run together, in capitals
    "ZyxwvutQponmlk", "QPONMLKZYXWVUT", "qponmlk_zyxwvut", "ReportZyxwvut.pdf", "Zyxwvut2",
    "Zyxwvut's film", "ZYXWVUT, QPONMLK",
    # IDs run together with letters or other IDs, without separators, in groups
    "PID83920471", "pid 83920471", "pid_83920471", "ID83920471ACC77123409", "83920471ACC77123409",
    "acc77123409", "OPID5512093x", "83920471", "8392 0471", "83-920-471",
    # the birth date in words, without zero padding, with two-digit years
    "4 March 1902", "March 4th, 1902", "4/3/1902", "3/4/02", "1902-3-4", "04-Mar-1902",
    "the 4th of March 1902", "19020304", "Mar. 4 1902", "4.3.1902", "1902 Mar 4",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_other_spellings_of_the_file_identifiers_are_removed(scrubber: Scrubber, spelling: str):
    cleaned = scrubber.text(f"Seen {spelling} today")
    for fragment in ("yxwvut", "ponmlk", "83920471", "8392", "77123409", "5512093", "1902"):
        assert fragment not in cleaned.lower(), cleaned
    assert cleaned.startswith("Seen ") and cleaned.endswith(" today")


@pytest.mark.parametrize("text", [
    "Lingula clear", "1902 films", "March 1902", "4 mm at 3 cm", "zyxwvuts are common",
    "CT 2019-03-04 compared", "3 of 4 nodules",
])
def test_ordinary_words_that_contain_a_name_or_date_part_are_kept(scrubber: Scrubber, text: str):
    assert scrubber.text(text) == text


def test_a_scrubber_of_several_files_and_of_none(tmp_path):
    first, second = Dataset(), Dataset()
    first.PatientName, second.ReferringPhysicianName = "Li^Wu", "Qzxv^Mlkj"
    both = Scrubber(first, second)
    assert both.text("WuLi and Dr Qzxv; Lingula") == "[REMOVED] and Dr [REMOVED]; Lingula"
    assert both.text("ReportLi, Wu2") == "Report[REMOVED], [REMOVED]2"
    assert Scrubber().text("Patient John Smith, MRN 12345678") == \
        "Patient [REMOVED], MRN [REMOVED]"  # no file: the rules alone
    assert Scrubber.of_files([tmp_path / "absent.dcm"]).text("plain text") == "plain text"


def test_every_defined_term_and_alias_is_of_its_vocabulary():
    """What radsearch.terms turns into defined terms is never dropped as unknown."""
    for field, table in (("modality", terms._MODALITY), ("view", terms._VIEW),
                         ("body_part", terms._BODY_PART)):
        for term, aliases in table.items():
            for value in (term, *aliases):
                assert known_value(field, value) == value, (field, value)


@pytest.mark.parametrize(("field", "value"), [
    ("modality", "Zyxwvut"), ("modality", "PID-83920471"), ("body_part", "SMITH JOHN"),
    ("body_part", "19020304"), ("view", "Qponmlk"), ("view", "L 83920471"), ("body_part", "^"),
])
def test_a_value_outside_the_vocabulary_is_dropped(field: str, value: str):
    assert known_value(field, value) is None


def test_metadata_keeps_its_vocabulary_and_cleans_its_free_text():
    stored = safe_field_values({
        "modality": "CT", "body_part": "Abdomen and pelvis", "view": "L PA",
        "manufacturer": "GE MEDICAL SYSTEMS, call 317-555-0193",
        "study_description": "CT CHEST for Patient John Smith", "series_description": None,
        "rows": 512,
    })
    assert stored == {
        "modality": "CT", "body_part": "Abdomen and pelvis", "view": "L PA",
        "manufacturer": "GE MEDICAL SYSTEMS, call [REMOVED]",
        "study_description": "CT CHEST for Patient [REMOVED]", "series_description": None,
        "rows": 512,
    }
    assert set(VOCABULARIES) == {"modality", "body_part", "view"}


def test_the_views_and_modalities_of_real_manifests_are_kept(shared_data):
    """Every view and modality the development manifests write is of its vocabulary (a lone
    "?" says nothing and is dropped)."""
    import csv

    for name in ("medpix2/manifest.csv", "vqa_rad/manifest_per_image.csv", "covid_cxr/manifest.csv"):
        with open(shared_data / name, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        for field in ("view", "modality"):
            values = {row[field] for row in rows if row[field] and row[field] != "?"}
            assert values and [v for v in values if known_value(field, v) is None] == [], name
