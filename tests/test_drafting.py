"""Report drafting: drafters, citations, neighbours, contradictions, the CLI (hashing-tiny)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from radsearch.storage import catalog
from radsearch.drafting import create_drafter, draft, list_drafters
from radsearch.drafting.base import DraftLine, Neighbour, NeighbourSentence
from radsearch.drafting.citations import cite
from radsearch.drafting.findings import sentence_findings
from radsearch.drafting.retrieval_drafter import RetrievalDrafter
from radsearch.errors import RadsearchError
from tests.backend_params import QDRANT_EDGE
from tests.drafting_corpus import REPORTS, STUDY_UID, build_studies

DRAFTERS = ("retrieval", "nn-copy", "most-common")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    from radsearch.indexer import index_folder

    root = build_studies(tmp_path_factory.mktemp("drafting") / "studies")
    index = root.parent / "index"
    index_folder(root, index=index, model="hashing-tiny", workers=0)
    return index


def study_keys(index: Path) -> list[str]:
    """The study key of each of ``REPORTS``, in order (each report is written once)."""
    conn = catalog.connect(index / "catalog.sqlite", readonly=True)
    try:
        by_text = {text: key for key, text in conn.execute(
            "SELECT studies.key, reports.text FROM reports JOIN studies ON studies.id = reports.study_id")}
    finally:
        conn.close()
    return [by_text[report] for _, report in REPORTS]


def run_cli(args: list[str], capfd) -> tuple[int, str, str]:
    from radsearch.cli import main

    old = sys.argv
    sys.argv = ["radsearch", *args]
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = old
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def test_registry_lists_the_drafters(capfd) -> None:
    infos = {info.name: info for info in list_drafters()}
    assert set(DRAFTERS) <= set(infos) and infos["retrieval"].default
    with pytest.raises(RadsearchError, match="unknown drafter"):
        create_drafter("nope")
    code, out, _ = run_cli(["drafters", "--json"], capfd)
    assert code == 0 and {d["name"] for d in json.loads(out)} == set(infos)


@pytest.mark.parametrize("name", DRAFTERS)
def test_every_citation_points_to_a_real_neighbour_sentence(indexed: Path, name: str) -> None:
    result = draft(STUDY_UID.format(0), index=indexed, k=3, drafter=name)
    assert result.sentences and result.draft
    from radsearch.reports import report_sentences

    for sentence in result.sentences:
        scores = [c.score for c in sentence.citations]
        assert scores == sorted(scores, reverse=True)
        for citation in sentence.citations:
            neighbour = result.neighbours[citation.neighbour - 1]
            assert citation.study == neighbour.study
            assert citation.sentence in [s.text for s in report_sentences(neighbour.report)]


def test_nn_copy_copies_the_nearest_report_and_cites_it(indexed: Path) -> None:
    result = draft(STUDY_UID.format(0), index=indexed, k=3, drafter="nn-copy")
    from radsearch.drafting.text import report_body

    assert report_body(result.draft) == report_body(result.neighbours[0].report)
    assert all(s.citations[0].neighbour == 1 and s.citations[0].score == pytest.approx(1.0)
               for s in result.sentences)


def test_most_common_is_the_same_whatever_the_query(indexed: Path) -> None:
    drafts = {draft(STUDY_UID.format(n), index=indexed, k=2, drafter="most-common").draft
              for n in (0, 4, 5)}
    assert len(drafts) == 1


def test_never_the_study_itself_nor_its_patient(indexed: Path) -> None:
    keys = study_keys(indexed)
    result = draft(STUDY_UID.format(0), index=indexed, k=4)
    neighbours = {n.study for n in result.neighbours}
    assert keys[0] not in neighbours and keys[1] not in neighbours  # study 1: the same patient
    allowed = draft(STUDY_UID.format(0), index=indexed, k=5, same_patient=True)
    assert keys[0] not in {n.study for n in allowed.neighbours}
    assert keys[1] in {n.study for n in allowed.neighbours}


def test_a_file_query_leaves_out_its_own_indexed_study(indexed: Path) -> None:
    keys = study_keys(indexed)
    image = indexed.parent / "studies" / "study3" / "IM0001.dcm"
    result = draft(image, index=indexed, k=5)
    assert keys[3] not in {n.study for n in result.neighbours}


def test_retrieval_draft_never_says_a_finding_both_ways(indexed: Path) -> None:
    for n in range(len(REPORTS)):
        result = draft(STUDY_UID.format(n), index=indexed, k=4, same_patient=True)
        said: dict[str, set[str]] = {}
        for sentence in result.sentences:
            for name, status in sentence_findings(sentence.text).items():
                said.setdefault(name, set()).add(status)
        assert not any({"positive", "negative"} <= statuses for statuses in said.values()), said


def _unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def _neighbour(study: str, score: float, sentences: list[tuple[str, np.ndarray]]) -> Neighbour:
    return Neighbour(study, score, " ".join(t for t, _ in sentences),
                     tuple(NeighbourSentence("REPORT", i, t, v) for i, (t, v) in enumerate(sentences)))


def test_contradiction_keeps_the_better_supported_side() -> None:
    effusion, no_effusion, heart = _unit(1, 0, 0), _unit(0.9, 0.1, 0), _unit(0, 0, 1)
    neighbours = [
        _neighbour("a", 0.90, [("No pleural effusion.", no_effusion), ("Normal heart.", heart)]),
        _neighbour("b", 0.89, [("Small left pleural effusion.", effusion)]),
        _neighbour("c", 0.88, [("Small left pleural effusion.", effusion)]),
    ]
    lines = RetrievalDrafter().compose(_unit(1, 0, 1), neighbours, source=None)
    texts = [line.text for line in lines]
    assert "Small left pleural effusion." in texts and "No pleural effusion." not in texts


def test_near_duplicates_are_dropped() -> None:
    v = _unit(1, 0, 0)
    neighbours = [_neighbour(s, 0.9, [("The lungs are clear.", v), ("Lungs are clear.", v)])
                  for s in ("a", "b")]
    lines = RetrievalDrafter().compose(v, neighbours, source=None)
    assert len(lines) == 1


def test_the_draft_starts_from_the_report_the_other_neighbours_agree_with() -> None:
    """The nearest report is an outlier; the draft is the report that the others support."""
    nodule, clear, heart, fracture = _unit(1, 0, 0, 0), _unit(0, 1, 0, 0), _unit(0, 0, 1, 0), _unit(0, 0, 0, 1)
    neighbours = [
        _neighbour("outlier", 0.91, [("Rib fracture.", fracture)]),
        _neighbour("a", 0.90, [("Right lung nodule.", nodule), ("Heart size is normal.", heart)]),
        _neighbour("b", 0.89, [("Right lung nodule.", nodule), ("Lungs otherwise clear.", clear)]),
        _neighbour("c", 0.88, [("Right lung nodule.", nodule), ("Heart size is normal.", heart)]),
    ]
    texts = [line.text for line in RetrievalDrafter().compose(_unit(1, 1, 1, 1), neighbours, source=None)]
    assert texts == ["Right lung nodule.", "Heart size is normal."]


def test_a_sentence_most_neighbours_say_is_added_to_the_chosen_report() -> None:
    nodule, heart, spine = _unit(1, 0, 0), _unit(0, 1, 0), _unit(0, 0, 1)
    neighbours = [
        _neighbour("a", 0.90, [("Right lung nodule.", nodule)]),
        _neighbour("b", 0.89, [("Right lung nodule.", nodule), ("Heart size is normal.", heart)]),
        _neighbour("c", 0.88, [("Spine degenerative change.", spine), ("Heart size is normal.", heart)]),
        _neighbour("d", 0.87, [("Heart size is normal.", heart)]),
    ]
    texts = [line.text for line in RetrievalDrafter().compose(_unit(1, 1, 0), neighbours, source=None)]
    assert "Right lung nodule." in texts and "Heart size is normal." in texts
    assert "Spine degenerative change." not in texts


def test_what_the_chosen_report_says_in_other_words_is_not_added() -> None:
    pa_view, ap_view, opacity = _unit(1, 0, 0), _unit(0.85, 0.527, 0), _unit(0, 0, 1)
    neighbours = [
        _neighbour("a", 0.90, [("Chest X-ray, PA view.", pa_view), ("Patchy opacities.", opacity)]),
        _neighbour("b", 0.89, [("Chest X-ray, AP view.", ap_view), ("Patchy opacities.", opacity)]),
        _neighbour("c", 0.88, [("Chest X-ray, AP view.", ap_view)]),
    ]
    texts = [line.text for line in RetrievalDrafter().compose(_unit(1, 0, 1), neighbours, source=None)]
    assert sum(text.startswith("Chest X-ray") for text in texts) == 1 and "Patchy opacities." in texts


def test_a_draft_states_one_diagnosis_label_the_better_supported() -> None:
    """The nearest report (the one drafted from) says SARS; more neighbour weight says COVID-19."""
    opacity, heart, sars, covid = _unit(1, 0, 0, 0), _unit(0, 1, 0, 0), _unit(0, 0, 1, 0), _unit(0, 0, 0, 1)
    neighbours = [
        _neighbour("a", 0.95, [("Finding: SARS.", sars), ("Patchy opacities.", opacity),
                               ("Heart size is normal.", heart)]),
        _neighbour("b", 0.89, [("Finding: COVID-19.", covid), ("Patchy opacities.", opacity)]),
        _neighbour("c", 0.89, [("Finding: COVID-19.", covid), ("Heart size is normal.", heart)]),
    ]
    texts = [line.text for line in RetrievalDrafter().compose(_unit(1, 1, 0, 0), neighbours, source=None)]
    assert texts == ["Finding: COVID-19.", "Patchy opacities.", "Heart size is normal."]


def test_a_sentence_no_neighbour_supports_says_so() -> None:
    neighbours = [_neighbour("a", 0.9, [("Heart size is normal.", _unit(1, 0, 0))])]
    lines = [DraftLine("REPORT", "Heart size is normal.", _unit(1, 0, 0)),
             DraftLine("REPORT", "Large hiatal hernia.", _unit(0, 1, 0))]
    supported, unsupported = cite(lines, neighbours, encode_texts=lambda texts: None)
    assert supported.citations[0].study == "a" and supported.supported
    assert unsupported.citations == [] and not unsupported.supported


def test_a_close_sentence_that_contradicts_is_no_support() -> None:
    neighbours = [_neighbour("a", 0.9, [("No pleural effusion.", _unit(1, 0, 0))])]
    [sentence] = cite([DraftLine("REPORT", "Small pleural effusion.", _unit(1, 0.01, 0))], neighbours,
                      encode_texts=lambda texts: None)
    assert sentence.citations == []


def test_cli_json_is_the_api(indexed: Path, capfd) -> None:
    code, out, _ = run_cli(["draft", STUDY_UID.format(2), "--index", str(indexed), "-k", "3", "--json"],
                           capfd)
    assert code == 0
    assert json.loads(out) == draft(STUDY_UID.format(2), index=indexed, k=3).to_dict()
    code, out, _ = run_cli(["draft", STUDY_UID.format(2), "--index", str(indexed), "-k", "3"], capfd)
    assert code == 0 and "Neighbours:" in out and "[1]" in out


@pytest.mark.parametrize("case", ["unreadable", "empty", "no reports", "k too large", "no index"])
def test_bad_input_is_one_line_and_a_failure(indexed: Path, tmp_path: Path, case: str, capfd) -> None:
    from radsearch.indexer import index_folder

    query, index, k = STUDY_UID.format(0), indexed, "3"
    if case == "unreadable":
        query = str(tmp_path / "broken.png")
        Path(query).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif case == "empty":
        (tmp_path / "nothing").mkdir()
        index = tmp_path / "empty-index"
        index_folder(tmp_path / "nothing", index=index, model="hashing-tiny", workers=0)
    elif case == "no reports":
        folder = tmp_path / "images"
        folder.mkdir()
        (folder / "a.dcm").write_bytes((indexed.parent / "studies" / "study0" / "IM0001.dcm").read_bytes())
        index = tmp_path / "no-reports"
        index_folder(folder, index=index, model="hashing-tiny", workers=0)
        query = str(folder / "a.dcm")
    elif case == "k too large":
        k = "10"
    else:
        index = tmp_path / "missing"
    code, out, err = run_cli(["draft", query, "--index", str(index), "-k", k], capfd)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert {"unreadable": "broken.png", "empty": "empty", "no reports": "no indexed study has a report",
            "k too large": "larger than the corpus", "no index": "missing"}[case] in err


@pytest.mark.parametrize("backend", [QDRANT_EDGE])
def test_drafts_the_same_from_another_back_end(indexed: Path, tmp_path_factory, backend: str) -> None:
    from radsearch.indexer import index_folder

    index = tmp_path_factory.mktemp("other-backend") / "index"
    index_folder(indexed.parent / "studies", index=index, model="hashing-tiny", workers=0, backend=backend)
    here, there = (draft(STUDY_UID.format(3), index=i, k=3) for i in (indexed, index))
    assert [s.text for s in here.sentences] == [s.text for s in there.sentences]
    assert [n.score for n in here.neighbours] == pytest.approx([n.score for n in there.neighbours], abs=1e-4)


@pytest.mark.parametrize("backend", [QDRANT_EDGE])
def test_cli_drafts_through_the_back_end_it_is_given(indexed: Path, tmp_path_factory, backend: str,
                                                     capfd) -> None:
    from radsearch.indexer import index_folder

    index = tmp_path_factory.mktemp("cli-backend") / "index"
    index_folder(indexed.parent / "studies", index=index, model="hashing-tiny", workers=0, backend=backend)
    code, out, _ = run_cli(["draft", STUDY_UID.format(3), "--index", str(index), "-k", "3",
                            "--backend", backend, "--json"], capfd)
    assert code == 0
    assert json.loads(out) == draft(STUDY_UID.format(3), index=index, k=3, backend=backend).to_dict()
    code, _, err = run_cli(["draft", STUDY_UID.format(3), "--index", str(index), "--backend", "nonsense"],
                           capfd)
    assert code != 0 and "nonsense" in err
