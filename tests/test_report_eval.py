"""`radsearch eval report`: which rows are drafted from which, the metrics it prints (hashing-tiny)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from radsearch.drafting.metrics import finding_f1
from radsearch.drafting.text import normalise, report_body
from radsearch.training.report_eval import report_task
from tests.drafting_corpus import REPORTS, build_studies
from tests.test_drafting import run_cli


def write_manifest(path: Path, images: list[Path], splits: list[str] | None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "text", "group"] + (["split"] if splits else []))
        for n, (image, (patient, report)) in enumerate(zip(images, REPORTS)):
            writer.writerow([str(image), report, patient] + ([splits[n]] if splits else []))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    root = build_studies(tmp_path_factory.mktemp("report-eval") / "studies")
    return [root / f"study{n}" / "IM0001.dcm" for n in range(len(REPORTS))]


def test_evaluated_rows_are_never_in_the_corpus(images: list[Path], tmp_path: Path) -> None:
    splits = ["test", "train", "train", "dev", "train", "test"]
    manifest = write_manifest(tmp_path / "m.csv", images, splits)
    task = report_task([manifest], "test")
    assert [p.image for p in task.evaluated] == [images[0], images[5]]
    assert {p.image for p in task.corpus} == {images[n] for n in (1, 2, 3, 4)}
    assert {p.image for p in report_task([manifest], "test", corpus_split="train").corpus} == {
        images[n] for n in (1, 2, 4)}
    # Another manifest as the corpus: the evaluated rows in it are still left out.
    everything = write_manifest(tmp_path / "all.csv", images, None)
    task = report_task([manifest], "test", corpus=[everything])
    assert not {p.image for p in task.corpus} & {images[0], images[5]}


def test_a_manifest_without_split_evaluates_all_its_rows(images: list[Path], tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", images[:4], None)
    corpus = write_manifest(tmp_path / "corpus.csv", images[4:], None)
    task = report_task([manifest], "test", corpus=[corpus])
    assert len(task.evaluated) == 4 and len(task.corpus) == 2
    with pytest.raises(Exception, match="no corpus rows"):
        report_task([manifest], "test")


def test_normalisation_is_one_function_for_all() -> None:
    assert normalise("FINDINGS: No effusion;  3.5 cm Mass.") == "findings no effusion 3.5 cm mass"
    assert report_body("FINDINGS: No effusion.\nIMPRESSION: Normal.") == "No effusion. Normal."


def test_finding_f1_counts_positives_only() -> None:
    scores = finding_f1(["Small pleural effusion. No pneumothorax."], ["Pleural effusion and pneumothorax."])
    # Effusion (and its general Effusion) found; the negated pneumothorax is a miss, not a match.
    assert scores["micro"] == pytest.approx(2 * 2 / (2 + 3))


def test_eval_report_json(images: list[Path], tmp_path: Path, capfd, monkeypatch) -> None:
    pytest.importorskip("pycocoevalcap")
    # METEOR's Java start takes from seconds to a minute: here it is reported as unavailable
    # (test_meteor_with_java computes it).
    monkeypatch.setattr("radsearch.drafting.metrics.meteor_unavailable", lambda: "no Java here")
    manifest = write_manifest(tmp_path / "m.csv", images, ["test", "train", "train", "train", "train", "test"])
    code, out, err = run_cli(["eval", "report", "--manifest", str(manifest), "--model", "hashing-tiny",
                              "-k", "2", "--drafter", "retrieval", "--drafter", "nn-copy", "--json"], capfd)
    assert code == 0, err
    results = json.loads(out)
    assert [r["drafter"] for r in results] == ["retrieval", "nn-copy"]
    for r in results:
        assert {"n", "BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "finding_F1", "drafter"} <= set(r)
        assert r["n"] == 2 and r["corpus"] == 4
        assert r["METEOR"] is None and r["METEOR_unavailable"] == "no Java here"
        assert 0 <= r["ROUGE-L"] <= 1 and set(r["finding_F1"]) == {"micro", "macro"}


@pytest.mark.slow
def test_meteor_with_java() -> None:
    pytest.importorskip("pycocoevalcap")
    from radsearch.drafting.metrics import meteor_unavailable, nlg_metrics

    if meteor_unavailable():
        pytest.skip(meteor_unavailable())
    scores = nlg_metrics(["small left pleural effusion"], ["small left pleural effusion"])
    assert scores["METEOR"] > 0.9 and scores["BLEU-1"] == pytest.approx(1.0)
