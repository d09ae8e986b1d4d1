"""The rule-based de-identifier of report text: the spellings it removes, the radiology text it
keeps, and its false positives on real, already de-identified reports."""

from __future__ import annotations

import csv
import io
import re
import tarfile
import xml.etree.ElementTree as ET

import pytest

from radsearch.reading.deid import REMOVED, deidentify, identifier_spans

# (text, what must be gone from it)
IDENTIFIERS = [
    ("Patient John Q Smith, MRN 12345678", ["John", "Smith", "12345678"]),
    ("Patient Name: SMITH^JOHN^Q", ["SMITH", "JOHN"]),
    ("Name: john smith", ["john", "smith"]),
    ("PATIENT: SMITH, JOHN", ["SMITH", "JOHN"]),
    ("Discussed with Dr. J. Smith at 3 pm.", ["Smith"]),
    ("Discussed with Dr Wqplmnbv about it.", ["Wqplmnbv"]),
    ("DR. SMITH WAS NOTIFIED.", ["SMITH"]),
    ("Mrs O'Neil-Barry called; Dr McDonald agreed.", ["O'Neil", "Barry", "McDonald"]),
    ("Electronically signed by Jane Roe, MD", ["Jane", "Roe"]),
    ("Dictated by: Alan Turing", ["Alan", "Turing"]),
    ("MRN: A-1234567", ["1234567"]),
    ("MR# 998877", ["998877"]),
    ("Medical record number 44556677", ["44556677"]),
    ("Acc. no. 77123409", ["77123409"]),
    ("Accession #: XR-2020-0042", ["XR-2020-0042"]),
    ("ID 4521", ["4521"]),
    ("Patient ID: PID-83920471", ["83920471"]),
    ("PID83920471 and ACC77123409PID83920471, pid_83920471", ["83920471", "77123409"]),
    ("SSN 123-45-6789", ["6789"]),
    ("NHS number 943 476 5919", ["943 476 5919"]),
    ("DOB: 04/03/1902", ["04/03/1902"]),
    ("DOB 4/3/02", ["4/3/02"]),
    ("born 04.03.1902", ["04.03.1902"]),
    ("Born on March 4, 1902", ["March 4, 1902"]),
    ("date of birth: 4th March 1902", ["4th March 1902"]),
    ("D.O.B. 1902-03-04", ["1902-03-04"]),
    ("b. 4 Mar 1902", ["4 Mar 1902"]),
    ("Birthdate 19020304", ["19020304"]),
    ("DOB: 04-Mar-1902", ["04-Mar-1902"]),
    ("call 317-555-0193", ["555-0193"]),
    ("Tel: (317) 555 0193", ["555 0193"]),
    ("phone +44 20 7946 0958", ["7946 0958"]),
    ("pager 4455, ext. 2231", ["4455", "2231"]),
    ("email john.smith@example.org", ["john.smith@example.org"]),
    ("lives at 12 Kvaxlor Street, Apt 4B", ["Kvaxlor", "4B"]),
    ("1600 Pennsylvania Avenue NW", ["Pennsylvania"]),
    ("P.O. Box 1234", ["1234"]),
    ("Indianapolis, IN 46202", ["46202"]),
    ("93-year-old female; a 95 year old; aged 96; Age: 101; 92 yo man; 97yo", ["93", "95", "96",
                                                                               "101", "92", "97"]),
    ("UID 1.2.840.113619.2.55.3.604688", ["113619"]),
]


@pytest.mark.parametrize(("text", "gone"), IDENTIFIERS, ids=[t for t, _ in IDENTIFIERS])
def test_identifiers_are_removed(text: str, gone: list[str]):
    cleaned = deidentify(text)
    assert REMOVED in cleaned
    for value in gone:
        assert value not in cleaned, cleaned


ORDINARY = [
    "MR BRAIN WITHOUT CONTRAST",
    "MS lesions in the periventricular white matter.",
    "Chest CT 2012-08-01 for comparison; compared to 08/01/2012.",
    "T2-weighted MR. Masses enhance.",
    "Measures 3.5 x 2.1 x 1.4 cm.",
    "L4-L5 disc bulge, C5-6 and C6-7 foraminal narrowing. BI-RADS 4. COVID-19.",
    "Series 3 image 45. HU of 45. 1.5 T MRI.",
    "The patient is a 45 year old man. Patient History: cough. Patient positioned supine.",
    "Dr. notified. No. 4 lesion. Impression: Normal. ST segment.",
    "5 Right Lower Lobe nodules. Right Ct. In 1990 a CT was done. Aged 45 and 89 years.",
    "The 90th percentile; 90 degrees; dose 12000 mGy; 1,234,567 cells; version 2.1.3.",
    "Ferritin: 531-489-443 ng/mL. Reference: RadioGraphics 2006;26:1373-1390. PMID: 24131592.",
    "Neoplasm Name: Pilocytic Astrocytoma. Patient Currently smokes. Patient referred by OB-Gyn.",
    "CC: I can't see on my right side. Patient B. Non-contrast CT of pelvis.",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_radiology_text_is_kept(text: str):
    assert deidentify(text) == text


def test_empty_text_is_kept():
    assert deidentify("") == ""
    assert identifier_spans("no identifiers here") == []


def _iu_reports(shared_data) -> list[str]:
    archive = shared_data / "iu_xray_reports" / "NLMCXR_reports.tgz"
    if not archive.exists():
        pytest.skip(f"{archive} is absent")
    reports = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".xml"):
                root = ET.fromstring(tar.extractfile(member).read())
                reports.append("\n".join(f"{node.get('Label')}: {node.text}"
                                         for node in root.iter("AbstractText") if node.text))
    return reports


def _medpix_texts(shared_data) -> list[str]:
    manifest = shared_data / "medpix2" / "manifest.csv"
    if not manifest.exists():
        pytest.skip(f"{manifest} is absent")
    rows = list(csv.DictReader(io.StringIO(manifest.read_text(encoding="utf-8"))))
    cases = {row["case_id"]: "\n".join(row[k] for k in ("case_history", "case_findings",
                                                        "differential")) for row in rows}
    return [row["text"] for row in rows] + list(cases.values())


def _wrongly_removed_words(texts: list[str]) -> tuple[int, int, list[str]]:
    """(words, words removed that are not XXXX nor an age over 89, what they were)."""
    words, wrong = 0, []
    for text in texts:
        words += len(text.split())
        for start, end in identifier_spans(text):
            span = text[start:end]
            if re.fullmatch(r"9\d|1[0-4]\d", span):
                continue  # an age over 89: removed by rule (HIPAA Safe Harbor)
            wrong += [word for word in span.split() if "XXXX" not in word]
    return words, len(wrong), wrong


def test_no_false_positives_on_real_reports(shared_data):
    """3,955 IU chest X-ray reports (already de-identified, with XXXX) and 2,050 MedPix captions
    with 671 case histories: no word of them removed but masks (XXXX) and ages over 89."""
    iu = _wrongly_removed_words(_iu_reports(shared_data))
    medpix = _wrongly_removed_words(_medpix_texts(shared_data))
    print(f"\nIU X-ray: {iu[1]} of {iu[0]} words removed wrongly; MedPix: {medpix[1]} of "
          f"{medpix[0]}")
    assert iu[0] > 150_000 and medpix[0] > 100_000
    assert (iu[2], medpix[2]) == ([], [])
