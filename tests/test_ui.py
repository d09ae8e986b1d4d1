"""The explorer in a real browser: `radsearch ui` serves the sample studies' index, Chromium drives it.

Each page must show what the Python API returns for the same question, on FAISS and on the embedded
Qdrant engine (`--backend qdrant-edge`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import radsearch
from radsearch.errors import RadsearchError
from radsearch.samples import sample_studies_path
from radsearch.ui import streamlit_command

CHROMIUM = os.environ.get("RADSEARCH_TEST_BROWSER") or next(
    (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
    None,
)
MISSING = [name for name in ("streamlit", "playwright") if importlib.util.find_spec(name) is None]
needs_browser = pytest.mark.skipif(
    bool(MISSING) or CHROMIUM is None,
    reason=f"needs {', '.join(MISSING) or 'a Chromium binary'} (pip install -e '.[ui,dev]'; "
           "apt-get install chromium, or RADSEARCH_TEST_BROWSER=/path/to/chrome)",
)
QUERY = "pleural effusion"
LOAD_S = 120  # first query of a fresh server: the model loads
# The console script, as a user runs it (`python -m` would put the working folder on sys.path).
RADSEARCH = [str(Path(sys.executable).with_name("radsearch"))]


def test_command_serves_locally_without_telemetry_or_browser() -> None:
    command = streamlit_command(index=Path("/data/idx"), backend="qdrant-edge", port=9000)
    assert command[1:5] == ["-P", "-m", "streamlit", "run"]  # -P: the working folder never shadows radsearch
    options = dict(zip(command[6:command.index("--"):2], command[7:command.index("--"):2]))
    assert options["--server.address"] == "127.0.0.1"
    assert options["--server.port"] == "9000"
    assert options["--browser.gatherUsageStats"] == "false"
    assert options["--server.headless"] == "true"
    assert command[command.index("--") + 1:] == ["--index", "/data/idx", "--backend", "qdrant-edge"]


def test_command_refuses_an_unknown_back_end() -> None:
    with pytest.raises(RadsearchError, match="unknown back end 'milvus'"):
        streamlit_command(backend="milvus")


def test_cli_without_streamlit_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from radsearch import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "streamlit" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        sys.argv = ["radsearch", "ui", "--port", "9"]
        cli.main()
    assert exit_info.value.code != 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "streamlit" in line]
    assert lines == ["error: the explorer needs streamlit: pip install 'radsearch[ui]'"]


# -- serving -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _descendants(pid: int) -> set[int]:
    """The live processes below ``pid`` (from /proc; zombies are not alive)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _start(arguments: list[str], cwd: Path, env: dict) -> tuple[subprocess.Popen, str, set[int]]:
    """`radsearch ui ARGUMENTS` in a session of its own, once it answers: (process, URL, the
    processes it started)."""
    port = _free_port()
    server = subprocess.Popen([*RADSEARCH, "ui", *arguments, "--port", str(port)], cwd=cwd,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not _answers(url):
        if server.poll() is not None or time.monotonic() > deadline:
            _stop_all(server)
            pytest.fail(f"explorer did not start: {server.stdout.read().decode(errors='replace')[-2000:]}")
        time.sleep(0.3)
    return server, url, _descendants(server.pid)


def _stop_all(server: subprocess.Popen) -> None:
    """Whatever happens in a test, its session's processes end with it."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait(timeout=30)


def _assert_nothing_left(url: str, started: set[int]) -> None:
    deadline = time.monotonic() + 15
    while (_alive(started) or _answers(url)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(started), f"still running: {sorted(_alive(started))}"
    assert not _answers(url)


@pytest.mark.skipif("streamlit" in MISSING, reason="needs streamlit (pip install -e '.[ui]')")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_stopping_the_command_stops_its_server(signum: int, tmp_path: Path) -> None:
    server, url, started = _start(["--index", str(tmp_path / "index")], tmp_path, dict(os.environ))
    try:
        assert started, "the command serves from a process of its own"
        server.send_signal(signum)  # to the command alone, as `kill PID` does
        server.wait(timeout=30)
        _assert_nothing_left(url, started)
    finally:
        for pid in _alive(started):
            os.kill(pid, signal.SIGKILL)
        _stop_all(server)


# -- in the browser ----------------------------------------------------------------------------


CT_SERIES = "dicom_series/dicom_numpy_dupe_positions"  # 11 CT slices, 512x512, in ../shared/data


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each page's screenshot goes: the test run's output folder, or
    $RADSEARCH_UI_SCREENSHOTS (the README's pictures are taken that way)."""
    chosen = os.environ.get("RADSEARCH_UI_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module", params=["faiss", "qdrant-edge"])
def served(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """An index of the sample studies on one back end (on FAISS with the 11-slice CT series as well,
    when the shared data is there), and the explorer serving it, started from a folder that holds a
    clone named ``radsearch`` (which must not stand in for the package)."""
    if MISSING or CHROMIUM is None:
        pytest.skip("no browser")
    from radsearch.indexer import index_folder

    from conftest import SHARED_DATA

    backend = request.param
    corpus = tmp_path_factory.mktemp(f"ui-corpus-{backend}")
    shutil.copytree(sample_studies_path(), corpus / "samples")
    ct = SHARED_DATA / CT_SERIES
    if backend == "faiss" and ct.is_dir():
        shutil.copytree(ct, corpus / "ct")
    if backend == "faiss":
        _two_series_study(corpus / "two-series")
    jpeg = next(sample_studies_path().rglob("*.jpg")).read_bytes()
    (corpus / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # fails: the index page lists it
    index = tmp_path_factory.mktemp(f"ui-{backend}") / "index"
    index_folder(corpus, index=index, backend=backend)
    home, scratch = tmp_path_factory.mktemp("ui-home"), tmp_path_factory.mktemp("ui-tmp")
    workdir = tmp_path_factory.mktemp("ui-cwd")
    (workdir / "radsearch" / "radsearch").mkdir(parents=True)  # a clone's folders, no __init__
    server, url, started = _start(["--index", str(index), "--backend", backend], workdir,
                                  {**os.environ, "HOME": str(home), "TMPDIR": str(scratch)})
    try:
        yield {"url": url, "index": index, "backend": backend, "scratch": scratch,
               "ct": (corpus / "ct") if (corpus / "ct").is_dir() else None,
               "two_series": (corpus / "two-series") if backend == "faiss" else None}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        finally:
            _stop_all(server)
        _assert_nothing_left(url, started)


def _two_series_study(folder: Path) -> None:
    """A study of two real MR series: pydicom's one-slice MR and its 10-frame MR, filed under
    one Study Instance UID as series 1 and 2."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir()
    study = generate_uid()
    for number, name in enumerate(("MR_small.dcm", "emri_small.dcm"), start=1):
        dataset = pydicom.dcmread(get_testdata_file(name))
        dataset.StudyInstanceUID, dataset.SeriesNumber = study, number
        dataset.save_as(folder / name)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if MISSING or CHROMIUM is None:
        pytest.skip("no browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, served):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    yield tab
    context.close()


def _open(page, served: dict, path: str) -> None:
    page.goto(f"{served['url']}/{path}")
    page.get_by_role("heading", level=1).first.wait_for(timeout=30_000)


def _shot(page, screenshots: Path, served: dict, name: str) -> None:
    page.wait_for_timeout(300)  # the last element's paint
    page.screenshot(path=str(screenshots / f"{name}-{served['backend']}.png"), full_page=True)


def _cards(page, key: str, count: int) -> list:
    """The result cards, once ``count`` of them are on the page (they render one by one)."""
    from playwright.sync_api import expect

    cards = page.locator(f"[class*='st-key-{key}-card-']")
    expect(cards).to_have_count(count, timeout=LOAD_S * 1000)
    return cards.all()


def _card_studies(page, key: str, count: int) -> list[str]:
    """The studies the cards open, in order (from their title links), once the page has settled."""
    from urllib.parse import parse_qs, urlparse

    _cards(page, key, count)
    _settled(page)
    studies = []
    for card in _cards(page, key, count):
        href = card.locator("a.study-link").get_attribute("href")
        studies.append(parse_qs(urlparse(href).query)["study"][0])
    return studies


def _settled(page) -> None:
    """The app's run has ended: no element of the previous run is still shown."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid^=stStatusWidgetRunning]')"
        " && !document.querySelector('[data-stale=true]')", timeout=LOAD_S * 1000)


def _wait_for_pictures(page, count: int) -> None:
    """``count`` pictures arrive and decode (a broken one never gets a natural width)."""
    page.wait_for_function(
        "n => { const shown = Array.from(document.images).filter(i => i.src.includes('media'));"
        " return shown.length >= n && shown.every(i => i.complete && i.naturalWidth > 0); }",
        arg=count, timeout=30_000)


@needs_browser
def test_text_search_shows_the_api_results_as_a_grid(page, served: dict, screenshots: Path) -> None:
    expected = radsearch.search(QUERY, index=served["index"], k=5, backend=served["backend"])
    _open(page, served, "search")
    page.get_by_label("Find studies showing", exact=True).fill(QUERY)
    page.get_by_label("Studies", exact=True).fill("5")
    page.get_by_role("button", name="Search").click()
    assert _card_studies(page, "search", len(expected.hits)) == [h.study for h in expected.hits]
    cards = _cards(page, "search", len(expected.hits))
    tops = [card.bounding_box()["y"] for card in cards]
    assert tops[0] == tops[1] == tops[2], "several studies to a row"
    for card, hit in zip(cards, expected.hits):
        title = card.locator("a.study-link").inner_text()
        assert hit.study not in title and "/" not in title  # never a key, hash or file name
        assert f"score {hit.score:.3f}" in card.inner_text()
    _wait_for_pictures(page, len(expected.hits))
    assert "q=pleural+effusion" in page.url  # the question is in the address
    _shot(page, screenshots, served, "search")


@needs_browser
@pytest.mark.parametrize("served", ["faiss"], indirect=True)  # the same on any back end
def test_a_search_link_opens_with_its_results(page, served: dict) -> None:
    expected = radsearch.search(QUERY, index=served["index"], k=3, target="reports",
                                backend=served["backend"])
    _open(page, served, "search?q=pleural+effusion&target=reports&k=3")
    assert _card_studies(page, "search", len(expected.hits)) == [h.study for h in expected.hits]
    page.get_by_text(expected.hits[0].sentences[0].text, exact=False).first.wait_for(timeout=30_000)


@needs_browser
@pytest.mark.parametrize("served", ["faiss"], indirect=True)  # the same on any back end
def test_a_click_on_a_result_opens_the_study(page, served: dict, screenshots: Path) -> None:
    expected = radsearch.search(QUERY, index=served["index"], k=3, target="reports",
                                backend=served["backend"])
    _open(page, served, "search?q=pleural+effusion&target=reports&k=3")
    _cards(page, "search", len(expected.hits))[0].locator("a.study-link").click()
    detail = radsearch.show(expected.hits[0].study, index=served["index"])
    page.get_by_text(f"study {detail.study}", exact=False).first.wait_for(timeout=30_000)
    page.get_by_text(detail.reports[0].text.splitlines()[0], exact=False).first.wait_for(timeout=30_000)
    assert "/study?study=" in page.url
    page.go_back()  # Back returns to the results
    assert _card_studies(page, "search", len(expected.hits)) == [h.study for h in expected.hits]
    page.locator("a.nav-link", has_text="Index").click()  # another page, from the side bar
    page.get_by_role("heading", name="Index", level=1).wait_for(timeout=30_000)
    page.go_back()  # and Back to the same question
    assert _card_studies(page, "search", len(expected.hits)) == [h.study for h in expected.hits]
    _shot(page, screenshots, served, "study-report")


@needs_browser
@pytest.mark.parametrize("served", ["faiss"], indirect=True)  # the same on any back end
def test_the_study_box_takes_every_study_typed(page, served: dict) -> None:
    """Each study typed in turn is shown (before, every second one was ignored)."""
    studies = [hit.study for hit in radsearch.search(QUERY, index=served["index"], k=3,
                                                     backend=served["backend"]).hits]
    _open(page, served, "study")
    box = page.get_by_label("Study key, UID, accession number or file", exact=True)
    for study in [*studies, studies[0]]:
        box.fill(study)
        box.press("Enter")
        page.get_by_text(f"study {study}", exact=False).first.wait_for(timeout=30_000)
        assert f"study={study}" in page.url.replace("%3A", ":").replace("%2F", "/")


@needs_browser
def test_similar_cases_of_an_uploaded_file(page, served: dict, tmp_path: Path,
                                           screenshots: Path) -> None:
    indexed = next(p for p in sorted(sample_studies_path().rglob("*")) if p.suffix.lower() == ".jpg")
    # An upload is a new file, not the indexed one: its own study is a candidate, as for a copy.
    query = tmp_path / "upload.jpg"
    shutil.copyfile(indexed, query)
    expected = radsearch.similar(query, index=served["index"], k=4, backend=served["backend"])
    _open(page, served, "similar")
    page.locator("input[type=file]").set_input_files(str(query))
    page.get_by_label("Studies", exact=True).fill("4")
    page.get_by_role("button", name="Find similar cases").click()
    assert _card_studies(page, "similar", len(expected.hits)) == [h.study for h in expected.hits]
    page.get_by_text("Query", exact=True).wait_for(timeout=30_000)
    _wait_for_pictures(page, len(expected.hits) + 1)  # the query's picture too
    assert not list(served["scratch"].glob("radsearch-ui-*"))  # the uploaded image is not kept
    _shot(page, screenshots, served, "similar")


@needs_browser
@pytest.mark.parametrize("served", ["faiss"], indirect=True)  # the same on any back end
def test_a_bad_upload_names_the_upload_not_the_server_folder(page, served: dict,
                                                              tmp_path: Path) -> None:
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is no picture")
    _open(page, served, "similar")
    page.locator("input[type=file]").set_input_files(str(bad))
    page.get_by_role("button", name="Find similar cases").click()
    alert = page.get_by_role("alert").first
    alert.wait_for(timeout=LOAD_S * 1000)
    message = alert.inner_text()
    assert "not-an-image.png" in message
    assert "radsearch-ui-" not in message and str(served["scratch"]) not in message


@needs_browser
def test_two_label_queries_in_a_row(page, served: dict, screenshots: Path) -> None:
    """The second query on a server works (radsearch.label_query once became a module), typed
    labels win over a chosen set, and a capped list says so."""
    # 0.3: the sample studies hold no effusion, and the model's finding probabilities sit near 0.5,
    # so a lower bar keeps studies enough to cap the list whatever the model's weights.
    first = radsearch.label_query(QUERY, min_prob=0.3, index=served["index"], backend=served["backend"])
    second = radsearch.label_query("MRI", labels="CT, MRI, X-ray", min_prob=0.3,
                                   index=served["index"], backend=served["backend"])
    assert len(first.hits) > 2, "the sample index has studies enough to cap the list"
    _open(page, served, "label?min_prob=0.3")
    page.get_by_label("Label", exact=True).fill(QUERY)
    page.get_by_label("At most (0: every match)", exact=True).fill("2")
    page.get_by_role("button", name="Find studies").click()
    page.get_by_text("More than 2 studies have", exact=False).wait_for(timeout=LOAD_S * 1000)
    assert _card_studies(page, "label", 2) == [hit.study for hit in first.hits[:2]]
    page.get_by_text("describe chest radiographs", exact=False).wait_for(timeout=30_000)
    _shot(page, screenshots, served, "label")

    page.get_by_label("Label", exact=True).fill("MRI")
    page.get_by_label("Labels, comma-separated", exact=True).fill("CT, MRI, X-ray")
    page.get_by_label("or a built-in label set", exact=True).click()
    page.get_by_role("option", name="modality").click()
    page.get_by_label("At most (0: every match)", exact=True).fill("0")
    page.get_by_role("button", name="Find studies").click()
    noun = "study" if len(second.hits) == 1 else "studies"
    page.get_by_text(f"{len(second.hits)} {noun} with p(MRI)", exact=False).wait_for(timeout=LOAD_S * 1000)
    assert not page.get_by_role("alert").count()  # not refused for giving labels and a set
    assert _card_studies(page, "label", len(second.hits)) == [hit.study for hit in second.hits]


@needs_browser
@pytest.mark.parametrize("served", ["faiss"], indirect=True)  # the same on any back end
def test_label_query_pages_show_every_study_once(page, served: dict) -> None:
    """Page by page, in order, each study of the answer once (the page size from the link)."""
    from urllib.parse import parse_qs, urlencode, urlparse

    from playwright.sync_api import expect

    expected = [hit.study for hit in radsearch.label_query(
        QUERY, min_prob=0.05, index=served["index"], backend=served["backend"]).hits]
    assert len(expected) >= 3, "studies enough for three pages"
    size = -(-len(expected) // 3)
    pages = -(-len(expected) // size)
    _open(page, served, "label?" + urlencode({"label": QUERY, "min_prob": 0.05, "limit": 0,
                                              "per_page": size}))
    shown: list[str] = []
    for number in range(1, pages + 1):
        if number > 1:
            page.get_by_role("button", name="Next page").click()
            page.get_by_role("button", name=f"Page {number}").and_(
                page.locator("[aria-current=page]")).wait_for(timeout=30_000)
        count = min(size, len(expected) - len(shown))
        # The page buttons can change before the new cards replace the old ones (the app's run may
        # not have started when the click returns): wait for the first card of this page.
        first = page.locator("[class*='st-key-label-card-'] a.study-link").first
        expect(first).to_have_text(re.compile(rf"^{len(shown) + 1}\. "), timeout=LOAD_S * 1000)
        studies = _card_studies(page, "label", count)
        assert first.inner_text().startswith(f"{len(shown) + 1}. ")  # numbered on from the last page
        shown += studies
        if number > 1:  # the page is in the address
            assert parse_qs(urlparse(page.url).query)["page"] == [str(number)]
    assert shown == expected and len(set(shown)) == len(expected)
    assert page.get_by_role("button", name="Next page").is_disabled()
    # Larger pages: the page seen is beyond the new last one, and the list starts again.
    page.get_by_label("Studies per page", exact=True).fill(str(2 * size))
    page.get_by_role("button", name="Find studies").click()
    assert _card_studies(page, "label", min(2 * size, len(expected))) == expected[:2 * size]
    assert not page.get_by_role("alert").count() and not page.get_by_test_id("stException").count()


@needs_browser
@pytest.mark.parametrize("served", ["faiss"], indirect=True)  # the same on any back end
def test_classify_a_study_shows_a_chart_beside_its_picture(page, served: dict,
                                                           screenshots: Path) -> None:
    study = radsearch.search(QUERY, index=served["index"], k=1, backend=served["backend"]).hits[0].study
    expected = radsearch.classify(study, label_set="modality", index=served["index"])
    _open(page, served, "classify")
    page.get_by_label("or an indexed study (UID, key or file)", exact=True).fill(study)
    page.get_by_label("or a built-in label set", exact=True).click()
    page.get_by_role("option", name="modality").click()
    page.get_by_role("button", name="Classify").click()
    page.get_by_text(f"most probable {expected.top}", exact=False).wait_for(timeout=LOAD_S * 1000)
    page.get_by_test_id("stVegaLiteChart").first.wait_for(timeout=30_000)  # the bar chart
    _wait_for_pictures(page, 1)
    _shot(page, screenshots, served, "classify")


@needs_browser
@pytest.mark.parametrize("served", ["faiss"], indirect=True)  # the same on any back end
def test_a_bad_filter_is_one_clear_error(page, served: dict) -> None:
    _open(page, served, "search")
    page.get_by_label("Find studies showing", exact=True).fill(QUERY)
    page.get_by_text("Filters").click()
    page.get_by_label("Date from", exact=True).fill("2020-13-45")
    page.get_by_role("button", name="Search").click()
    alert = page.get_by_role("alert").first
    alert.wait_for(timeout=30_000)
    assert "2020-13-45" in alert.inner_text()
    assert not page.locator("[class*='st-key-search-card-']").count()


@needs_browser
def test_index_page_counts(page, served: dict, screenshots: Path) -> None:
    stats = radsearch.stats(index=served["index"])
    _open(page, served, "index")
    from playwright.sync_api import expect

    metrics = page.locator("[data-testid='stMetric']")
    expect(metrics).to_have_count(7, timeout=30_000)
    body = metrics.all_inner_texts()
    shown = {text.split("\n")[0].strip(): text.split("\n")[-1].strip() for text in body}
    assert shown["studies"] == f"{stats['studies']:,}"
    assert shown["images"] == f"{stats['images']:,}"
    page.get_by_text(f"back end {stats['backend']}", exact=False).wait_for(timeout=30_000)
    assert stats["failed"] == 1
    run = stats["last_run"]
    last_run = page.locator(".st-key-last-run")
    expect(last_run).to_contain_text(f"took {run['seconds']:.1f} s", timeout=30_000)
    started = run["started"].replace("T", " ").replace("Z", " UTC")
    assert f"started {started}, of {run['root']}" in last_run.inner_text()
    counts = last_run.get_by_test_id("stTable").inner_text().split()
    names = ["indexed", "unchanged", "failed", "skipped", "removed"]
    assert counts == [*names, *(f"{run[name]:,}" for name in names)]
    assert run["failed"] == 1 and run["finished"] is not None and run["indexed"] > 0
    last_run.get_by_text("Files it could not read (1)", exact=True).wait_for(timeout=30_000)
    failure = run["failures"][0]
    failed = last_run.get_by_test_id("stDataFrame").locator("table")
    expect(failed).to_contain_text(failure["path"], timeout=30_000)
    expect(failed).to_contain_text(failure["reason"])
    modalities = page.get_by_test_id("stTable").first.inner_text()
    assert "modality" in modalities and "MR" in modalities  # the sample MR series
    _shot(page, screenshots, served, "index")


@needs_browser
@pytest.mark.parametrize("served", ["faiss"], indirect=True)  # the same on any back end
def test_a_draft_cites_neighbour_sentences_that_open_marked(page, served: dict,
                                                            screenshots: Path) -> None:
    from urllib.parse import urlencode

    from playwright.sync_api import expect

    study = radsearch.search(QUERY, index=served["index"], k=1, target="reports",
                             backend=served["backend"]).hits[0].study
    expected = radsearch.draft(study, index=served["index"], k=3)
    cited = next(s for s in expected.sentences if s.citations)
    _open(page, served, f"draft?{urlencode({'ref': study, 'k': 3})}")
    page.get_by_text(cited.text, exact=True).first.wait_for(timeout=LOAD_S * 1000)
    _settled(page)
    # Streamlit sends the sentences one by one: wait for all of them, not just the first.
    sentences = page.locator("[class*='st-key-draft-sentence-']")
    expect(sentences).to_have_count(len(expected.sentences), timeout=30_000)
    _shot(page, screenshots, served, "draft")
    first = cited.citations[0]  # the first link on the page: the first sentence with citations
    page.locator("a.citation").first.click()
    page.locator("mark.cited").wait_for(timeout=LOAD_S * 1000)
    assert page.locator("mark.cited").inner_text() == first.sentence
    assert f"study {first.study}" in page.locator("body").inner_text()


@needs_browser
def test_an_empty_index_is_said_on_every_page(browser, tmp_path: Path) -> None:
    server, url, started = _start(["--index", str(tmp_path / "nothing-here")], tmp_path,
                                  dict(os.environ))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        tab = context.new_page()
        for path in ("search", "study", "index"):
            tab.goto(f"{url}/{path}")
            notice = tab.get_by_role("alert").first
            notice.wait_for(timeout=30_000)
            assert "nothing-here" in notice.inner_text()
    finally:
        context.close()
        server.terminate()
        server.wait(timeout=30)
        _stop_all(server)
        _assert_nothing_left(url, started)


@needs_browser
def test_a_store_without_its_catalog_opens_the_index_and_study_pages(browser, tmp_path: Path) -> None:
    """The explorer pointed at a Qdrant store from a machine without the index's catalog: the
    index page shows the store's counts (the catalog's own as "-"), a study opens with its series."""
    pytest.importorskip("qdrant_client")
    from playwright.sync_api import expect

    from radsearch.indexer import index_folder

    where = {"backend": "qdrant", "url": str(tmp_path / "qdrant-local")}
    index_folder(sample_studies_path(), index=tmp_path / "index", model="hashing-tiny", workers=0,
                 **where)
    elsewhere = tmp_path / "no-index-here"
    stats = radsearch.stats(index=elsewhere, **where)
    found = radsearch.search(QUERY, index=elsewhere, k=4, **where).hits
    study = found[0].study
    detail = radsearch.show(study, index=elsewhere, **where)  # closed again: the server opens it
    server, url, started = _start(["--index", str(elsewhere), "--backend", "qdrant", "--url",
                                   where["url"]], tmp_path, dict(os.environ))
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        tab = context.new_page()
        tab.goto(f"{url}/index")
        metrics = tab.locator("[data-testid='stMetric']")
        expect(metrics).to_have_count(7, timeout=LOAD_S * 1000)
        shown = {text.split("\n")[0].strip(): text.split("\n")[-1].strip()
                 for text in metrics.all_inner_texts()}
        assert shown["studies"] == f"{stats['studies']:,}" and shown["reports"] == "-"
        tab.get_by_text("No catalog of this index on this machine", exact=False).wait_for(
            timeout=30_000)
        tab.goto(f"{url}/search?q={QUERY.replace(' ', '+')}&k=4")
        _cards(tab, "search", len(found))
        tab.goto(f"{url}/study?study={study}")
        tab.get_by_text(f"study {detail.study}", exact=False).wait_for(timeout=LOAD_S * 1000)
        assert f"{len(detail.series)} series" in tab.locator("body").inner_text()
        assert not tab.get_by_role("alert").count()
    finally:
        context.close()
        server.terminate()
        server.wait(timeout=30)
        _stop_all(server)
        _assert_nothing_left(url, started)


# -- the study viewer on a real CT series --------------------------------------------------------


def _ct_study(served: dict) -> str:
    if served["ct"] is None:
        pytest.skip(f"the 11-slice CT is not in ../shared/data/{CT_SERIES}")
    return radsearch.show(str(next(served["ct"].iterdir())), index=served["index"]).study


def _caption(page) -> str:
    """The viewer's caption (slice, position, window), once the run has ended."""
    _settled(page)
    return page.locator("[data-testid='stImage']").filter(has_text="slice").first.inner_text()


def _viewed(page) -> tuple[str, bytes]:
    """The viewer's caption and the picture's rendered pixels, once it has loaded."""
    caption = _caption(page)
    picture = page.locator("[data-testid='stImage']").filter(has_text="slice").first.locator("img")
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    return caption, picture.screenshot()


@needs_browser
@pytest.mark.parametrize("served", ["faiss"], indirect=True)  # the viewer is the same on any back end
def test_the_viewer_pages_through_every_slice_in_every_window(page, served: dict,
                                                              screenshots: Path) -> None:
    study = _ct_study(served)
    detail = radsearch.show(study, index=served["index"])
    (series,) = detail.series
    assert len(series.images) == 11
    _open(page, served, f"study?study={study}")
    caption, _ = _viewed(page)
    assert caption.startswith("slice 1 of 11")
    slider = page.get_by_test_id("stSlider")
    positions = []
    for number in range(2, 12):  # the Next button, through every slice
        page.get_by_role("button", name="›", exact=True).click()  # next slice
        page.get_by_text(f"slice {number} of 11", exact=False).first.wait_for(timeout=30_000)
        assert slider.get_by_test_id("stSliderThumbValue").inner_text() == str(number)
        caption = _caption(page)
        positions.append(caption.split("position ")[1].split(" mm")[0])
    assert len(positions) == 10 and "slice=11" in page.url
    page.get_by_role("button", name="‹", exact=True).click()  # previous slice
    page.get_by_text("slice 10 of 11", exact=False).first.wait_for(timeout=30_000)
    slider.get_by_role("slider").press("ArrowLeft")  # the keyboard moves the slider too
    page.get_by_text("slice 9 of 11", exact=False).first.wait_for(timeout=30_000)

    pictures = {}
    for window in ("lung", "bone", "brain"):
        page.get_by_text(window, exact=True).click()
        page.get_by_text(f"{window}: W", exact=False).wait_for(timeout=30_000)
        pictures[window] = _viewed(page)[1]
        assert f"window={window}" in page.url
    assert len(set(pictures.values())) == 3, "each window renders other pixels"
    table = page.get_by_test_id("stTable").inner_text()
    assert "slice thickness" in table and "GE MEDICAL SYSTEMS" in table
    _shot(page, screenshots, served, "viewer")


@needs_browser
@pytest.mark.parametrize("served", ["faiss"], indirect=True)  # the viewer is the same on any back end
def test_choosing_another_series_shows_its_slices(page, served: dict) -> None:
    study = radsearch.show(str(served["two_series"] / "MR_small.dcm"), index=served["index"]).study
    detail = radsearch.show(study, index=served["index"])
    assert [len(series.images) for series in detail.series] == [1, 10]
    _open(page, served, f"study?study={study}")
    caption, one_slice = _viewed(page)
    assert caption.startswith("slice 1 of 1 ")
    choose = page.get_by_test_id("stRadio").filter(has_text="Series")
    choose.get_by_text("2", exact=True).click()
    page.get_by_text("slice 1 of 10", exact=False).first.wait_for(timeout=30_000)
    caption, first_frame = _viewed(page)
    assert first_frame != one_slice and "series=2" in page.url
    page.get_by_role("button", name="›", exact=True).click()  # its slices, one by one
    page.get_by_text("slice 2 of 10", exact=False).first.wait_for(timeout=30_000)
    assert _viewed(page)[1] != first_frame
    choose.get_by_text("1", exact=True).click()  # and back
    page.get_by_text(re.compile(r"^slice 1 of 1\s")).first.wait_for(timeout=30_000)
    assert not page.get_by_test_id("stSlider").count()
    _open(page, served, f"study?study={study}&series=2&slice=10")  # a link to a series' slice
    assert _caption(page).startswith("slice 10 of 10")


@needs_browser
@pytest.mark.parametrize("served", ["faiss"], indirect=True)
def test_a_viewer_link_opens_its_slice_and_window(page, served: dict) -> None:
    study = _ct_study(served)
    _open(page, served, f"study?study={study}&slice=5&window=bone")
    caption, _ = _viewed(page)
    assert caption.startswith("slice 5 of 11") and "W 2000 L 500" in caption
    assert page.get_by_role("radio", name="bone").is_checked()


def test_a_result_title_is_never_a_key() -> None:
    from radsearch.ui.results import study_title

    assert study_title("CT CHEST W/O", "Findings: clear.", ["CT"], [], None) == "CT CHEST W/O"
    report = "EXAMINATION: Chest X-ray. FINDINGS: A right-sided pleural effusion."
    assert study_title(None, report, [], [], None) == "Chest X-ray. FINDINGS: A right-sided pleural ..."
    assert study_title(None, None, ["MR"], ["HEAD"], "2020-01-02") == "MR HEAD, 2020-01-02"
    assert study_title("  ", None, [], [], None) == "Study"


def test_windows_apply_to_original_values() -> None:
    import numpy as np

    from radsearch.previews import apply_window

    hounsfield = np.array([[-1000.0, -600.0, 40.0, 400.0, np.nan]], dtype=np.float32)
    lung = apply_window(hounsfield, -600.0, 1500.0)
    assert lung.tolist() == [[59, 127, 236, 255, 0]]  # W1500 L-600: -1350 .. 150 HU
    inverted = apply_window(hounsfield, 40.0, 400.0, invert=True)
    assert inverted[0, 0] == 255 and inverted[0, 3] == 0


def test_a_ct_frame_is_read_in_hounsfield_units_with_technical_facts_only(shared_data: Path) -> None:
    from radsearch.previews import FACT_ATTRIBUTES, frame_values

    first = sorted((shared_data / CT_SERIES).iterdir())[0]
    frame = frame_values(first)
    assert frame is not None and frame.values.shape == (512, 512)
    assert frame.values.min() < -900 and frame.values.max() > 300  # air and bone, in HU
    assert frame.position is not None and not frame.invert
    assert set(frame.facts) <= {name for _, name in FACT_ATTRIBUTES}
    assert frame.facts["modality"] == "CT" and frame.facts["rows"] == "512"
    jpeg = next(sample_studies_path().rglob("*.jpg"))
    assert frame_values(jpeg) is None  # shown as its preview
