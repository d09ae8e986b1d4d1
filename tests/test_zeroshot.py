"""Zero-shot classification: label sets, prompt ensembles, softmax vs CheXzero pairs, the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from radsearch.cli import app
from radsearch.encoders import create_model
from radsearch.encoders.base import Encoder, l2_normalise
from radsearch.errors import RadsearchError
from radsearch.indexer import index_folder
from radsearch.label_sets import CHEXPERT, LABEL_SETS, custom_label_set
from radsearch.zeroshot import ZeroShotClassifier, classify


class KeywordEncoder(Encoder):
    """Texts map to the axis of the first keyword they contain; images carry their axis directly."""

    name = "keyword-test"
    dim = 4
    image_size = 8
    KEYWORDS = ("effusion", "nodule", "fracture")

    def encode_images(self, images):
        raise NotImplementedError

    def encode_texts(self, texts):
        rows = []
        for text in texts:
            row = np.full(self.dim, 0.01, dtype=np.float32)
            hits = [i for i, word in enumerate(self.KEYWORDS) if word in text]
            row[hits[0] if hits else 3] = 1.0
            if text.startswith("no ") or " no " in text:
                row[:3] = 0.01  # a negated finding points to the "nothing" axis
                row[3] = 1.0
            rows.append(row)
        return l2_normalise(np.stack(rows))

    def weights_hash(self):
        return "keyword"


def test_single_label_softmax_picks_the_matching_label():
    encoder = KeywordEncoder()
    classifier = ZeroShotClassifier(encoder, custom_label_set("effusion, nodule, fracture"))
    image = l2_normalise(np.array([[0.0, 1.0, 0.0, 0.0]]))
    result = classifier.classify(image[0], "img")
    assert result.top == "nodule"
    assert sum(score.probability for score in result.scores) == pytest.approx(1.0)
    assert result.scores[0].probability > 0.9


def test_findings_give_independent_probabilities():
    encoder = KeywordEncoder()
    label_set = custom_label_set(["effusion", "fracture"], findings=True)
    classifier = ZeroShotClassifier(encoder, label_set)
    image = l2_normalise(np.array([[1.0, 0.0, 0.0, 0.3]]))  # an effusion, no fracture
    probabilities = dict(zip(label_set.labels, classifier.probabilities(image)[0]))
    assert probabilities["effusion"] > 0.99
    assert probabilities["fracture"] < 0.5
    # v.w ranks like the probability: the label query over an index relies on it
    direction = classifier.finding_direction("effusion")
    assert float(image[0] @ direction) > 0


def test_built_in_sets():
    assert len(CHEXPERT.labels) == 14 and CHEXPERT.kind == "findings"
    assert {"chexpert", "modality", "body-region", "plane"} <= set(LABEL_SETS)
    assert LABEL_SETS["modality"].kind == "single"
    with pytest.raises(RadsearchError):
        custom_label_set("only-one")


def test_classify_a_file_and_an_indexed_study(tmp_path):
    image = tmp_path / "studies" / "ct.dcm"
    image.parent.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), image)
    direct = classify(image, labels="CT, MRI, X-ray", model="hashing-tiny")
    assert [s.label for s in direct.scores] != []
    assert sum(s.probability for s in direct.scores) == pytest.approx(1.0, abs=1e-5)

    index = tmp_path / "index"
    index_folder(image.parent, index=index, model="hashing-tiny", workers=0)
    stored = classify(str(image), labels="CT, MRI, X-ray", index=index)
    # a one-image study's vector is its image's vector: same answer either way
    assert [s.label for s in stored.scores] == [s.label for s in direct.scores]
    assert [s.probability for s in stored.scores] == pytest.approx(
        [s.probability for s in direct.scores], abs=1e-5)


def test_classify_cli_json(tmp_path):
    image = tmp_path / "mr.dcm"
    shutil.copy(get_testdata_file("MR_small.dcm"), image)
    result = CliRunner().invoke(app, ["classify", str(image), "--label-set", "chexpert",
                                      "--model", "hashing-tiny", "--json"])
    data = json.loads(result.output)
    assert data["kind"] == "findings" and len(data["scores"]) == 14
    assert all(0.0 <= s["probability"] <= 1.0 for s in data["scores"])


def test_radclip_mini_classifies_real_images_end_to_end(tmp_path):
    encoder = create_model("radclip-mini")
    image = tmp_path / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), image)
    result = classify(image, label_set="modality")
    assert result.model == encoder.name and len(result.scores) == len(LABEL_SETS["modality"].labels)
    assert sum(s.probability for s in result.scores) == pytest.approx(1.0, abs=1e-4)


def test_auc_and_metrics_on_hand_made_cases():
    from radsearch.training.zeroshot_eval import auc, classification_metrics

    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)
    assert auc(np.array([0.2, 0.3]), np.array([1, 1])) is None
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    metrics = classification_metrics(probabilities, np.array([0, 1, 1, 1]), ["a", "b"])
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["balanced_accuracy"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert metrics["confusion_matrix"] == [[1, 0], [1, 2]]


def test_eval_zeroshot_cli_on_a_real_manifest(tmp_path, shared_data):
    import csv

    rows = list(csv.DictReader(open(shared_data / "medpix2" / "manifest.csv")))
    test_rows = [r for r in rows if r["split"] == "test" and r["modality"] == "CT"][:6]
    test_rows += [r for r in rows if r["split"] == "test" and r["modality"] == "MRI"][:6]
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_path", "modality", "split"])
        for row in test_rows:
            writer.writerow([str(shared_data / "medpix2" / row["image_path"]), row["modality"], "test"])
    result = CliRunner().invoke(app, ["eval", "zeroshot", "--manifest", str(manifest),
                                      "--label-column", "modality", "--split", "test",
                                      "--model", "hashing-tiny", "--json"])
    assert result.exit_code == 0, result.exception
    data = json.loads(result.output)
    assert data["n"] == 12
    assert {"accuracy", "balanced_accuracy", "macro_auc"} <= set(data)
    assert sum(map(sum, data["confusion_matrix"])) == 12
    # --weights: a radclip-mini weights file, the same figures as the shipped model from its file;
    # refused for another model.
    from radsearch.encoders._radclip_weights import WEIGHTS_FILE

    base = ["eval", "zeroshot", "--manifest", str(manifest), "--label-column", "modality",
            "--split", "test", "--json"]
    shipped = json.loads(CliRunner().invoke(app, base).output)
    from_file = CliRunner().invoke(app, base + ["--weights", str(WEIGHTS_FILE)])
    assert from_file.exit_code == 0, from_file.exception
    assert json.loads(from_file.output)["accuracy"] == shipped["accuracy"]
    refused = CliRunner().invoke(app, base + ["--model", "hashing-tiny", "--weights", str(WEIGHTS_FILE)])
    assert refused.exit_code != 0
