"""The finding extractor: mentions, negation and uncertainty scopes, report-level statuses."""

from __future__ import annotations

from pathlib import Path

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


def test_extractor_agrees_with_the_iu_xray_mesh_terms(shared_data) -> None:
    """On the 3,955 real IU X-ray reports the extractor finds what their MeSH terms list
    (benchmarks/finding_extractor_iu.py prints the per-finding table)."""
    import importlib.util

    archive = shared_data / "iu_xray_reports" / "NLMCXR_reports.tgz"
    if not archive.exists():
        pytest.skip(f"{archive} not found")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "finding_extractor_iu.py"
    spec = importlib.util.spec_from_file_location("finding_extractor_iu", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tp = predicted = true = 0
    for text, terms in module.read_reports(archive):
        if not text or any(t.lower() == "no indexing" for t in terms):
            continue
        truth = module.true_findings(terms) - {"No Finding"}
        found = positive_findings(text) & set(module.MESH)
        found.discard("No Finding")
        tp, predicted, true = tp + len(found & truth), predicted + len(found), true + len(truth)
    assert tp / predicted > 0.8 and tp / true > 0.85, (tp / predicted, tp / true)
