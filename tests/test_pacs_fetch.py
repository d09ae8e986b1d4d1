"""Studies indexed from a PACS, looked at: their pixels fetched on demand (through a bounded private
cache), their links in the PACS without a UID stored, and instances the PACS changed under the same
UID fetched again - against a real Orthanc on 127.0.0.1."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests

from radsearch import pacs_fetch
from radsearch.errors import RadsearchError
from radsearch.indexer import index_folder
from radsearch.indexer.pacs import index_pacs
from radsearch.pacs_fetch import forget_fetchers
from radsearch.previews import frame_values, image_preview, split_image_ref
from tests.orthanc_server import PASSWORD, USER
from tests.test_pacs import TINY, _contents, _copy, first_files, orthanc  # noqa: F401 - fixtures

pytest.importorskip("dicomweb_client", reason="the pacs extra (dicomweb-client) is not installed")

LINK = "https://viewer.invalid/?StudyInstanceUIDs={StudyInstanceUID}"


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch) -> Path:
    cache = tmp_path / "pacs-cache"
    monkeypatch.setenv("RADSEARCH_PACS_CACHE", str(cache))
    monkeypatch.delenv("RADSEARCH_PACS_LINK", raising=False)
    yield cache
    forget_fetchers()  # no association or session left open


def _images(index: Path, study: str) -> list[str]:
    from radsearch import show

    return [image for series in show(study, index=index).series for image in series.images]


def _studies(index: Path) -> list[str]:
    conn = sqlite3.connect(index / "catalog.sqlite")
    try:
        return [row[0] for row in conn.execute("SELECT key FROM studies ORDER BY key")]
    finally:
        conn.close()


def _pairs(pacs_index: Path, disk_index: Path) -> list[tuple[str, str]]:
    """(PACS key, file on disk) of the same image, over every study (one key hashes both)."""
    pairs = []
    for study in _studies(disk_index):
        pacs, disk = _images(pacs_index, study), _images(disk_index, study)
        assert len(pacs) == len(disk) and all(pacs_fetch.is_pacs_key(key) for key in pacs)
        pairs += zip(pacs, disk)
    return pairs


def _same_values(one, other) -> None:
    if one is None or other is None:
        assert one is None and other is None
        return
    np.testing.assert_array_equal(one.values, other.values)
    assert (one.center, one.width, one.invert, one.position, one.facts) == \
        (other.center, other.width, other.invert, other.position, other.facts)


@pytest.mark.parametrize("kind", ["dicomweb", "dimse"])
def test_pixels_of_a_pacs_study_are_fetched_on_demand_as_on_disk(kind, orthanc, first_files,
                                                                 private_cache, tmp_path):
    if kind == "dimse":
        pytest.importorskip("pynetdicom", reason="the pacs extra (pynetdicom) is not installed")
    orthanc.upload(first_files)
    pacs_index, disk_index = tmp_path / "pacs-index", tmp_path / "disk-index"
    index_pacs(getattr(orthanc, kind), index=pacs_index, model=TINY, workers=0)
    index_folder(_copy(first_files, tmp_path / "disk"), index=disk_index, model=TINY, workers=0)
    pairs = _pairs(pacs_index, disk_index)
    assert len(pairs) == len(first_files)
    assert not private_cache.exists()  # indexing fills no cache: only looking does
    for key, path in pairs:
        key_path, frame = split_image_ref(key)
        file_path, file_frame = split_image_ref(path)
        np.testing.assert_array_equal(image_preview(key_path, frame, index=pacs_index),
                                      image_preview(file_path, file_frame))
        _same_values(frame_values(key_path, frame, index=pacs_index),
                     frame_values(file_path, file_frame))
    cached = sorted(private_cache.glob("*.dcm"))
    assert len(cached) == len(first_files)
    assert oct(private_cache.stat().st_mode & 0o777) == "0o700"
    assert all(oct(path.stat().st_mode & 0o777) == "0o600" for path in cached)

    # The copies are found again without the PACS (a new process: nothing found is remembered).
    forget_fetchers()
    orthanc.stop()
    key, path = pairs[0]
    np.testing.assert_array_equal(image_preview(*split_image_ref(key), index=pacs_index),
                                  image_preview(*split_image_ref(path)))
    # Without the cache and the PACS: one line naming the key.
    for copy in cached:
        copy.unlink()
    with pytest.raises(RadsearchError, match="no answer") as failed:
        image_preview(*split_image_ref(key), index=pacs_index)
    assert "\n" not in str(failed.value) and split_image_ref(key)[0] in str(failed.value)


def test_the_index_holds_no_uid_and_the_cache_stays_within_its_bound(orthanc, first_files,
                                                                     private_cache, tmp_path,
                                                                     monkeypatch):
    orthanc.upload(first_files)
    index = tmp_path / "index"
    index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0)
    largest = max(path.stat().st_size for path in first_files)
    monkeypatch.setenv("RADSEARCH_PACS_CACHE_MB", str(2.5 * largest / 2**20))
    keys = [key for study in _studies(index) for key in _images(index, study)]
    for key in keys:
        image_preview(*split_image_ref(key), index=index)
        assert sum(path.stat().st_size for path in private_cache.glob("*.dcm")) <= 3 * largest
    assert len(list(private_cache.glob("*.dcm"))) < len(keys)
    # The catalog records the PACS's address, never a credential or a UID.
    conn = sqlite3.connect(index / "catalog.sqlite")
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert f"dicomweb+http://127.0.0.1:{orthanc.http_port}/dicom-web" in dump
    assert PASSWORD not in dump and USER not in dump
    uids = set()
    for path in first_files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        uids |= {header.StudyInstanceUID, header.SeriesInstanceUID, header.SOPInstanceUID}
    assert not any(uid in dump for uid in uids)
    assert not any(uid in path.name for uid in uids for path in private_cache.iterdir())


def test_results_and_studies_carry_their_pacs_link_without_a_stored_uid(orthanc, first_files,
                                                                        tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from radsearch import search, show, similar
    from radsearch.cli import app

    orthanc.upload(first_files)
    index = tmp_path / "index"
    index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0)
    uid = pydicom.dcmread(first_files[-1], stop_before_pixels=True).StudyInstanceUID
    assert show(uid, index=index).link is None  # no template, no link
    monkeypatch.setenv("RADSEARCH_PACS_LINK", LINK)
    assert show(uid, index=index).link == LINK.replace("{StudyInstanceUID}", uid)
    studies = {pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
               for path in first_files}
    found = search("brain", index=index, k=10).hits
    assert len(found) == len(studies)
    assert {hit.link for hit in found} == {LINK.replace("{StudyInstanceUID}", one)
                                           for one in studies}
    alike = similar(uid, index=index, k=10).hits
    assert alike and all(hit.link and hit.link.startswith("https://viewer.invalid/")
                         for hit in alike)
    printed = CliRunner().invoke(app, ["search", "brain", "--index", str(index), "--json"])
    assert printed.exit_code == 0, printed.output
    assert {hit["link"] for hit in json.loads(printed.stdout)["hits"]} == \
        {hit.link for hit in found}
    table = CliRunner().invoke(app, ["similar", uid, "--index", str(index)])
    assert table.exit_code == 0 and "https://viewer.invalid/?StudyInstanceUIDs=" in table.stdout
    # A PACS that does not answer costs the links, never the results.
    forget_fetchers()
    orthanc.stop()
    assert [hit.link for hit in search("brain", index=index, k=10).hits] == [None] * len(studies)


def _modify(orthanc, path: Path, replace: dict) -> None:
    """Replace attributes of the instance stored from ``path``, keeping its SOP Instance UID (as a
    PACS correcting an instance does)."""
    auth = (USER, PASSWORD)
    sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    found = requests.post(f"{orthanc.url}/tools/lookup", data=sop, auth=auth, timeout=30).json()
    instance = next(item["ID"] for item in found if item["Type"] == "Instance")
    modified = requests.post(f"{orthanc.url}/instances/{instance}/modify", auth=auth, timeout=30,
                             json={"Replace": replace, "Keep": ["SOPInstanceUID"], "Force": True})
    modified.raise_for_status()
    requests.delete(f"{orthanc.url}/instances/{instance}", auth=auth,
                    timeout=30).raise_for_status()
    requests.post(f"{orthanc.url}/instances", data=modified.content, auth=auth,
                  timeout=30).raise_for_status()


def test_an_instance_changed_in_the_pacs_is_fetched_again(orthanc, first_files, tmp_path):
    pytest.importorskip("pynetdicom", reason="the pacs extra (pynetdicom) is not installed")
    orthanc.upload(first_files)
    indexes = {kind: tmp_path / kind for kind in ("dicomweb", "dimse")}
    for kind, index in indexes.items():
        index_pacs(getattr(orthanc, kind), index=index, model=TINY, workers=0)
    before = {kind: _contents(index) for kind, index in indexes.items()}
    # CT_small, corrected to be shown inverted: its picture, hence its embedding, changes.
    _modify(orthanc, first_files[-1], {"PhotometricInterpretation": "MONOCHROME1"})
    for kind, index in indexes.items():
        again = index_pacs(getattr(orthanc, kind), index=index, model=TINY, workers=0)
        assert (again.indexed, again.unchanged) == (1, len(first_files) - 1), kind
        after = _contents(index)
        assert after["images"] == before[kind]["images"]
        changed = [not np.array_equal(one, other)
                   for one, other in zip(before[kind]["vectors"], after["vectors"])]
        assert sum(changed) == 1, kind
        third = index_pacs(getattr(orthanc, kind), index=index, model=TINY, workers=0)
        assert (third.indexed, third.unchanged) == (0, len(first_files)), kind


def test_the_explorer_views_a_pacs_study_fetched_on_demand(orthanc, first_files, private_cache,
                                                            tmp_path, monkeypatch):
    from tests.test_ui import (CHROMIUM, LOAD_S, MISSING, _assert_nothing_left, _cards,
                               _settled, _start, _stop_all, _wait_for_pictures)

    if MISSING or CHROMIUM is None:
        pytest.skip("no browser")
    from playwright.sync_api import sync_playwright

    from radsearch import search, show

    orthanc.upload(first_files)
    index = tmp_path / "index"
    index_pacs(orthanc.dicomweb, index=index, model=TINY, workers=0)
    uid = pydicom.dcmread(first_files[-1], stop_before_pixels=True).StudyInstanceUID
    study = show(uid, index=index).study
    monkeypatch.setenv("RADSEARCH_PACS_LINK", LINK)
    server, url, started = _start(["--index", str(index)], tmp_path, dict(os.environ))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                 args=["--no-sandbox"])
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            tab.goto(f"{url}/study?study={study}")
            tab.get_by_text("slice 1 of 1", exact=False).first.wait_for(timeout=LOAD_S * 1000)
            _settled(tab)
            assert not tab.get_by_role("alert").count()
            table = tab.get_by_test_id("stTable").inner_text()
            assert "GE MEDICAL SYSTEMS" in table and "128" in table  # the fetched header's facts
            link = tab.locator("a.pacs-link")
            assert link.get_attribute("href") == LINK.replace("{StudyInstanceUID}", uid)
            assert len(list(private_cache.glob("*.dcm"))) == 1  # the one instance looked at

            # Search results: each card's thumbnail fetched from the PACS, and its link.
            hits = search("brain", index=index, k=10).hits
            tab.goto(f"{url}/search?q=brain&k=10")
            cards = _cards(tab, "search", len(hits))
            _wait_for_pictures(tab, len(hits))
            _settled(tab)
            assert not tab.get_by_text("no preview", exact=False).count()
            shown = {card.locator("a.pacs-link").get_attribute("href") for card in cards}
            assert shown == {hit.link for hit in hits} and None not in shown
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
        _stop_all(server)
        _assert_nothing_left(url, started)
    # One thumbnail a card; CT_small's study has that one image, fetched once for both pages.
    assert len(list(private_cache.glob("*.dcm"))) == len(hits)
