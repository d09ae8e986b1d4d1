"""The finding extractor: mentions, negation and uncertainty scopes, report-level statuses."""

from __future__ import annotations

import pytest

from radsearch.drafting.findings import extract_findings, positive_findings, sentence_findings


@pytest.mark.parametrize("sentence, finding, status", [
    ("No pleural effusion or pneumothorax.", "Pleural Effusion", "negative"),
    ("No pleural effusion or pneumothorax.", "Pneumothorax", "negative"),
    ("Small left pleural effusion.", "Pleural Effusion", "positive"),
    ("Lungs are clear of focal airspace disease, pneumothorax, or pleural effusion.", "Pneumothorax",
     "negative"),
    ("Cannot exclude pneumonia.", "Pneumonia", "uncertain"),
    ("Pneumonia cannot be excluded.", "Pneumonia", "uncertain"),
    ("Possible right lower lobe consolidation.", "Consolidation", "uncertain"),
    ("No focal consolidation, but there is a small pneumothorax.", "Pneumothorax", "positive"),
    ("No focal consolidation, but there is a small pneumothorax.", "Consolidation", "negative"),
    ("No change in the left effusion.", "Pleural Effusion", "positive"),  # pseudo-negation
    ("The pneumothorax has resolved.", "Pneumothorax", "negative"),  # post-trigger
    ("The heart is normal in size.", "Cardiomegaly", "negative"),  # negative phrase
    ("The heart is not enlarged.", "Cardiomegaly", "negative"),
    ("Cardiomegaly without pulmonary edema.", "Cardiomegaly", "positive"),
    ("Cardiomegaly without pulmonary edema.", "Edema", "negative"),
    ("Acute infarct in the left MCA territory.", "Infarct", "positive"),
    ("No intracranial hemorrhage.", "Hemorrhage", "negative"),
    ("A 2 cm mass in the right kidney.", "Mass", "positive"),
])
def test_sentence_status(sentence: str, finding: str, status: str) -> None:
    assert sentence_findings(sentence)[finding] == status


def test_excluded_phrases_are_not_the_finding() -> None:
    found = sentence_findings("Small pericardial effusion. Mass effect on the ventricle.")
    assert "Pleural Effusion" not in found and "Mass" not in found
    assert found["Effusion"] == "positive"


def test_report_status_prefers_positive_then_uncertain() -> None:
    report = "FINDINGS: No effusion on the right. Small left pleural effusion.\nIMPRESSION: Possible pneumonia."
    statuses = extract_findings(report)
    assert statuses["Pleural Effusion"] == "positive"
    assert statuses["Pneumonia"] == "uncertain"
    assert statuses["No Finding"] == "negative"
    assert positive_findings(report) == {"Pleural Effusion", "Effusion"}


def test_normal_report_is_no_finding() -> None:
    statuses = extract_findings("The heart is normal in size. The lungs are clear. No pneumothorax.")
    assert statuses["No Finding"] == "positive"
    assert statuses["Cardiomegaly"] == "negative"
