"""Findings retrieval evaluation: the metric on hand-made rankings, the caption labels, and the
`eval findings` command end to end (hashing-tiny: the plumbing, not the semantics)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from radsearch.encoders import create_model
from radsearch.training.findings_eval import (
    average_precision,
    evaluate_findings,
    finding_labels,
    findings_metrics,
    precision_at_k,
)
from radsearch.training.manifest import read_manifest

SAMPLES = Path(__file__).resolve().parents[1] / "radsearch" / "sample_studies" / "images"


def test_precision_and_average_precision_on_a_hand_made_ranking():
    # Ranked order (by score): a, b, c, d, e; positives are a, c and e.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    positives = np.array([True, False, True, False, True])
    # Precision at each positive: 1/1, 2/3, 3/5.
    assert average_precision(scores, positives) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert precision_at_k(scores, positives, k=2) == pytest.approx(0.5)
    assert precision_at_k(scores, positives, k=10) == pytest.approx(3 / 5)  # fewer than k candidates
    # The scores order the candidates, not their rows.
    shuffled = np.array([2, 0, 4, 1, 3])
    assert average_precision(scores[shuffled], positives[shuffled]) == pytest.approx(
        average_precision(scores, positives))
    assert average_precision(np.array([0.1, 0.9]), np.array([True, False])) == pytest.approx(0.5)
    assert average_precision(scores, np.zeros(5, dtype=bool)) == 0.0


def test_findings_metrics_average_over_findings():
    images = np.eye(3, dtype=np.float32)
    queries = {"A": np.array([1.0, 0.0, 0.0]), "B": np.array([0.0, 0.0, 1.0])}
    labels = {"A": np.array([True, False, False]), "B": np.array([True, False, False])}
    metrics = findings_metrics(images, queries, labels, k=1)
    assert metrics["per_finding"]["A"] == {"positives": 1, "P@1": 1.0, "AP": 1.0}
    assert metrics["per_finding"]["B"]["P@1"] == 0.0
    assert metrics["per_finding"]["B"]["AP"] == pytest.approx(1 / 2)  # rows tie: row order
    assert metrics["mAP"] == pytest.approx(0.75) and metrics["mean_P@1"] == pytest.approx(0.5)


def test_caption_labels_are_positive_findings_only():
    labels = finding_labels([
        "Right pleural effusion.",
        "No pleural effusion. A mass in the right lung.",
        "Normal chest.",
    ])
    assert labels["Pleural Effusion"].tolist() == [True, False, False]
    assert labels["Mass"].tolist() == [False, True, False]
    assert "No Finding" not in labels


def _manifest(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    images = sorted(SAMPLES.glob("*.jpg"))[:6]
    lines = ["image,text,split"]
    for i, image in enumerate(images):
        shutil.copy(image, root / "images" / image.name)
        # Three images with an effusion, two with a mass (too few to be a query), one normal.
        text = ["Left pleural effusion.", "Small pleural effusions.", "Pleural effusion on the right.",
                "A mass in the liver.", "A renal mass.", "No acute findings."][i]
        lines.append(f"images/{image.name},{text},test")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv"


def test_evaluate_findings_queries_findings_with_enough_positive_images(tmp_path):
    pairs = read_manifest(_manifest(tmp_path))
    result = evaluate_findings(create_model("hashing-tiny"), pairs)
    assert result["n"] == 6 and result["min_positives"] == 3
    assert set(result["per_finding"]) == {"Effusion", "Pleural Effusion"}
    assert result["per_finding"]["Pleural Effusion"]["positives"] == 3
    for metrics in result["per_finding"].values():
        # Six candidates, three positive: P@10 counts all six; AP is at least the base rate's floor.
        assert metrics["P@10"] == pytest.approx(0.5)
        assert 0.0 < metrics["AP"] <= 1.0
    assert evaluate_findings(create_model("hashing-tiny"), pairs, min_positives=4)["findings"] == 0


def test_eval_findings_command(tmp_path):
    from radsearch.cli import app

    manifest = _manifest(tmp_path)
    result = CliRunner().invoke(app, ["eval", "findings", "--manifest", str(manifest),
                                      "--model", "hashing-tiny", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "hashing-tiny" and data["split"] == "test" and data["findings"] == 2
    assert 0.0 < data["mAP"] <= 1.0
    text = CliRunner().invoke(app, ["eval", "findings", "--manifest", str(manifest),
                                    "--model", "hashing-tiny"])
    assert text.exit_code == 0 and "Pleural Effusion" in text.output and "mAP" in text.output
