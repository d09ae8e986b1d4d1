"""radsearch.open_index: one open index answers every question as the module-level functions do,
on each back end; a Qdrant store searched from a machine without the index's catalog answers what
its points hold, and drafting, which needs the catalog, says so in one line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import radsearch
from radsearch import index_handle, open_index
from radsearch.cli import app
from radsearch.errors import IndexNotFoundError, RadsearchError
from radsearch.indexer import index_folder
from tests.backend_params import ALL_BACKENDS, needs
from tests.drafting_corpus import REPORTS, STUDY_UID, build_studies

TINY = "hashing-tiny"
LABELS = "pleural effusion, normal heart"


def _where(kind: str, folder: Path) -> dict:
    return {"backend": kind, "url": str(folder / "qdrant-local") if kind == "qdrant" else None}


@pytest.fixture(scope="module", params=ALL_BACKENDS)
def indexed(request, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(studies folder, index, back end) of the drafting corpus: six one-image studies with
    reports, studies 0 and 1 of one patient."""
    folder = tmp_path_factory.mktemp(f"open-{request.param}")
    root = build_studies(folder / "studies")
    where = _where(request.param, folder)
    index_folder(root, index=folder / "index", model=TINY, workers=0, **where)
    return root, folder / "index", where


def _questions(ask, uid: str) -> dict:
    """Every question, asked through ``ask(name, *args, **kwargs)``, as comparable dicts."""
    return {
        "images": ask("search", "pleural effusion", k=3).to_dict(),
        "reports": ask("search", "pleural effusion", k=3, target="reports").to_dict(),
        "similar": ask("similar", uid, k=3).to_dict(),
        "label": ask("label_query", "pleural effusion", labels=LABELS, min_prob=0.01).to_dict(),
        "classify": ask("classify", uid, labels=LABELS).to_dict(),
        "show": ask("show", uid).to_dict(),
        "stats": ask("stats"),
        "draft": ask("draft", uid, k=3).to_dict(),
    }


def test_every_method_answers_as_its_function_does(indexed) -> None:
    root, index, where = indexed
    uid = STUDY_UID.format(0)
    with open_index(index) as opened:
        answers = _questions(lambda name, *a, **kw: getattr(opened, name)(*a, **kw), uid)
        own, patients_other = opened.study_key(uid), opened.study_key(STUDY_UID.format(1))
    functions = _questions(lambda name, *a, **kw: getattr(radsearch, name)(*a, index=index, **kw),
                           uid)
    assert answers == functions

    assert answers["stats"]["studies"] == len(REPORTS) == answers["stats"]["reports"]
    assert answers["stats"]["backend"].startswith(where["backend"]) and answers["stats"]["catalog"]
    assert answers["show"]["study"] == own
    assert [r["text"] for r in answers["show"]["reports"]] == [REPORTS[0][1]]
    assert answers["show"]["series"][0]["images"] == [str(root / "study0" / "IM0001.dcm")]
    assert own not in {hit["study"] for hit in answers["similar"]["hits"]}
    assert all(hit["sentences"] for hit in answers["reports"]["hits"])
    assert sum(s["probability"] for s in answers["classify"]["scores"]) == pytest.approx(1.0)
    # the draft is never written from the study itself nor from another study of its patient
    assert {n["study"] for n in answers["draft"]["neighbours"]}.isdisjoint({own, patients_other})


def test_the_model_is_made_once_and_only_for_a_question_that_embeds(indexed, monkeypatch) -> None:
    _, index, _ = indexed
    made = []
    real = index_handle.create_model
    monkeypatch.setattr(index_handle, "create_model", lambda name: made.append(name) or real(name))
    with open_index(index) as opened:
        opened.show(STUDY_UID.format(2))
        opened.stats()
        assert made == []
        opened.search("effusion")
        opened.similar(STUDY_UID.format(2))
        opened.classify(STUDY_UID.format(2), labels=LABELS)
        opened.draft(STUDY_UID.format(2), k=2)
    assert made == [TINY]


def test_closing_the_index_closes_its_store(indexed) -> None:
    _, index, _ = indexed
    with open_index(index) as opened:
        assert opened.has_catalog and opened.path == index
    with pytest.raises(sqlite3.ProgrammingError):
        opened.store.conn.execute("SELECT 1")
    with open_index(index) as again:  # nothing held: it opens anew
        assert again.stats()["studies"] == len(REPORTS)


def test_a_wrong_question_fails_before_any_index_is_opened(tmp_path: Path) -> None:
    missing = tmp_path / "no-index"
    for call, message in (
        (lambda: radsearch.search("  ", index=missing), "empty query text"),
        (lambda: radsearch.search("x", index=missing, target="pixels"), "unknown search target"),
        (lambda: radsearch.label_query("x", label_set="nope", index=missing), "unknown label set"),
        (lambda: radsearch.classify("x", index=missing), "give either labels or a label set"),
        (lambda: radsearch.draft("x", index=missing, drafter="nope"), "unknown drafter"),
    ):
        with pytest.raises(RadsearchError, match=message):
            call()
    with pytest.raises(IndexNotFoundError, match="no radsearch index here"):
        open_index(missing)


def test_the_index_folder_and_the_back_end_asked_for(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RADSEARCH_INDEX", str(tmp_path / "configured"))
    assert index_handle.resolve_index_path(None) == tmp_path / "configured"
    assert index_handle.resolve_index_path("elsewhere") == Path("elsewhere")
    assert index_handle.backend_spec(None, None) is None
    spec = index_handle.backend_spec(None, "http://db:6333", {"hnsw_m": 32})
    assert (spec.kind, spec.url, dict(spec.options)) == ("qdrant", "http://db:6333", {"hnsw_m": 32})
    with pytest.raises(RadsearchError, match="back-end options need --backend"):
        index_handle.backend_spec(None, None, {"hnsw_m": 32})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> tuple[Path, dict]:
    """An index whose store is a Qdrant store (local mode standing in for a cluster)."""
    pytest.importorskip("qdrant_client")
    folder = tmp_path_factory.mktemp("cluster")
    root = build_studies(folder / "studies")
    where = _where("qdrant", folder)
    index_folder(root, index=folder / "index", model=TINY, workers=0, **where)
    return folder / "index", where


def _without_snippets(results: dict) -> dict:
    """Search results less the report snippets, which only the catalog holds."""
    return {**results, "hits": [{**hit, "snippet": None} for hit in results["hits"]]}


@needs("qdrant_client")
def test_a_store_without_its_catalog_answers_what_its_points_hold(cluster, tmp_path) -> None:
    index, where = cluster
    uid = STUDY_UID.format(3)
    with open_index(index) as local:
        here = {"images": local.search("pleural effusion", k=4).to_dict(),
                "similar": local.similar(uid, k=4).to_dict(),
                "label": local.label_query("pleural effusion", labels=LABELS, min_prob=0.01).to_dict(),
                "classify": local.classify(uid, labels=LABELS).to_dict(),
                "show": local.show(uid).to_dict(), "stats": local.stats()}
    with open_index(tmp_path / "no-index-here", **where) as remote:
        assert not remote.has_catalog
        there = {"images": remote.search("pleural effusion", k=4).to_dict(),
                 "similar": remote.similar(uid, k=4).to_dict(),
                 "label": remote.label_query("pleural effusion", labels=LABELS,
                                             min_prob=0.01).to_dict(),
                 "classify": remote.classify(uid, labels=LABELS).to_dict(),
                 "show": remote.show(uid).to_dict(), "stats": remote.stats()}
        with pytest.raises(RadsearchError, match="drafting reads the reports from the index's catalog"):
            remote.draft(uid, k=2)
        with pytest.raises(RadsearchError, match="no indexed study, series or image"):
            remote.show("1.2.3.4.5")
        # a study named by its key, as results list it, or by its Series UID
        assert remote.show(here["show"]["study"]).study == here["show"]["study"]
        assert remote.show(uid + ".1").study == here["show"]["study"]

    for name in ("images", "similar"):
        assert _without_snippets(there[name]) == _without_snippets(here[name])
        assert all(hit["snippet"] for hit in here[name]["hits"])
    assert there["label"] == here["label"] and there["classify"] == here["classify"]
    # show: the card, series and images; the reports are the catalog's
    assert here["show"]["reports"] and there["show"]["reports"] == []
    assert there["show"] == {**here["show"], "reports": [],
                             "series": [{**s, "description": None, "manufacturer": None}
                                        for s in here["show"]["series"]]}
    # stats: the points' counts and the model; the catalog's own counts are None
    for key in ("studies", "series", "images", "sentences", "by_modality", "by_body_part"):
        assert there["stats"][key] == here["stats"][key], key
    assert there["stats"]["model"] == {**here["stats"]["model"], "preprocessing": None}
    assert (there["stats"]["reports"], there["stats"]["failed"], there["stats"]["catalog"],
            there["stats"]["last_run"]) == (None, None, False, None)


@needs("qdrant_client")
def test_show_stats_and_classify_take_the_back_end_on_the_command_line(cluster, tmp_path) -> None:
    index, where = cluster
    uid = STUDY_UID.format(4)
    remote = ["--index", str(tmp_path / "no-index-here"), "--backend", "qdrant", "--url", where["url"]]
    runner = CliRunner()
    for args, expected in (
        (["show", uid], radsearch.show(uid, index=index).to_dict()),
        (["stats"], radsearch.stats(index=index)),
        (["classify", uid, "--labels", LABELS],
         radsearch.classify(uid, labels=LABELS, index=index).to_dict()),
    ):
        result = runner.invoke(app, [*args, *remote, "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        if args[0] == "classify":
            assert data == expected
        else:  # what the store holds, by the same study key
            key = "study" if args[0] == "show" else "studies"
            assert data[key] == expected[key]
    # as a table, what only the catalog counts is said to be there, not printed as None
    table = runner.invoke(app, ["stats", *remote])
    assert table.exit_code == 0 and "None" not in table.output
    assert "reports    - (kept in the index's catalog)" in table.output
    # the index's own store named again is accepted; another one is refused in one line
    ok = runner.invoke(app, ["stats", "--index", str(index), "--backend", "qdrant", "--url",
                             where["url"], "--json"])
    assert ok.exit_code == 0 and json.loads(ok.output)["catalog"] is True
    refused = runner.invoke(app, ["show", uid, "--index", str(index), "--backend", "faiss"])
    assert refused.exit_code != 0 and "this index uses qdrant" in str(refused.exception)


def test_an_embedded_file_is_left_out_with_its_indexed_study(indexed) -> None:
    """A query file that is indexed: its vector is its own, its study is excluded."""
    root, index, _ = indexed
    with open_index(index) as opened:
        embedded = opened.embed(root / "study5" / "IM0001.dcm")
        stored, key = opened.study_vector(str(root / "study5" / "IM0001.dcm"))
        assert key in embedded.studies and embedded.patient is not None
        np.testing.assert_allclose(embedded.vector, stored, atol=1e-5)  # one image: its study
        assert key not in {h.study for h in opened.similar(root / "study5" / "IM0001.dcm").hits}
