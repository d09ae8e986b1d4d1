"""The explorer in a real browser: `radsearch ui` serves the sample studies' index, Chromium drives it.

Each page must show what the Python API returns for the same question, on FAISS and on the embedded
Qdrant engine (`--backend qdrant-edge`).
"""

from __future__ import annotations

import importlib.util
import os
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
    from radsearch import cli, ui

    real = importlib.util.find_spec
    monkeypatch.setattr(ui.importlib.util, "find_spec",
                        lambda name, *a: None if name == "streamlit" else real(name, *a))
    with pytest.raises(SystemExit) as exit_info:
        sys.argv = ["radsearch", "ui", "--port", "9"]
        cli.main()
    assert exit_info.value.code != 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "Streamlit" in line]
    assert lines == ["error: the explorer needs Streamlit: pip install 'radsearch[ui]'"]


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


@pytest.fixture(scope="module", params=["faiss", "qdrant-edge"])
def served(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """An index of the sample studies on one back end, and the explorer serving it, started from a
    folder that holds a clone named ``radsearch`` (which must not stand in for the package)."""
    if MISSING or CHROMIUM is None:
        pytest.skip("no browser")
    from radsearch.indexer import index_folder

    backend = request.param
    index = tmp_path_factory.mktemp(f"ui-{backend}") / "index"
    index_folder(sample_studies_path(), index=index, backend=backend)
    home, scratch = tmp_path_factory.mktemp("ui-home"), tmp_path_factory.mktemp("ui-tmp")
    workdir = tmp_path_factory.mktemp("ui-cwd")
    (workdir / "radsearch" / "radsearch").mkdir(parents=True)  # a clone's folders, no __init__
    server, url, started = _start(["--index", str(index), "--backend", backend], workdir,
                                  {**os.environ, "HOME": str(home), "TMPDIR": str(scratch)})
    try:
        yield {"url": url, "index": index, "backend": backend, "scratch": scratch}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        finally:
            _stop_all(server)
        _assert_nothing_left(url, started)


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


def _study_headings(page, count: int) -> list[str]:
    """The result cards' studies, once ``count`` of them are on the page (they render one by one)."""
    from playwright.sync_api import expect

    expect(page.locator("h3")).to_have_count(count, timeout=LOAD_S * 1000)
    headings = page.locator("h3").all_inner_texts()
    return [h.split(". ", 1)[1].strip() for h in headings if ". " in h]


@needs_browser
def test_text_search_shows_the_api_results_with_pictures(page, served: dict) -> None:
    expected = radsearch.search(QUERY, index=served["index"], k=5, backend=served["backend"])
    _open(page, served, "")
    page.get_by_label("Find studies showing", exact=True).fill(QUERY)
    page.get_by_label("Studies", exact=True).fill("5")
    page.get_by_role("button", name="Search").click()
    assert _study_headings(page, len(expected.hits)) == [hit.study for hit in expected.hits]
    # Every card's pictures arrive and decode (a broken one never gets a natural width).
    pictures = sum(len(hit.images) for hit in expected.hits)
    assert pictures > 0
    page.wait_for_function(
        "n => { const shown = Array.from(document.images).filter(i => i.src.includes('media'));"
        " return shown.length === n && shown.every(i => i.complete && i.naturalWidth > 0); }",
        arg=pictures, timeout=30_000)


@needs_browser
def test_report_search_and_opening_a_study(page, served: dict) -> None:
    expected = radsearch.search(QUERY, index=served["index"], k=3, target="reports",
                                backend=served["backend"])
    _open(page, served, "")
    page.get_by_label("Find studies showing", exact=True).fill(QUERY)
    page.get_by_text("report sentences").click()
    page.get_by_label("Studies", exact=True).fill("3")
    page.get_by_role("button", name="Search").click()
    assert _study_headings(page, len(expected.hits)) == [hit.study for hit in expected.hits]
    best = expected.hits[0].sentences[0].text
    page.get_by_text(best, exact=False).first.wait_for(timeout=30_000)  # fails if never shown

    page.get_by_role("button", name="Open study").first.click()
    detail = radsearch.show(expected.hits[0].study, index=served["index"])
    page.get_by_text(f"study {detail.study}", exact=False).first.wait_for(timeout=30_000)
    page.get_by_text(detail.reports[0].text.splitlines()[0], exact=False).first.wait_for(timeout=30_000)


@needs_browser
def test_similar_cases_of_an_uploaded_file(page, served: dict, tmp_path: Path) -> None:
    indexed = next(p for p in sorted(sample_studies_path().rglob("*")) if p.suffix.lower() == ".jpg")
    # An upload is a new file, not the indexed one: its own study is a candidate, as for a copy.
    query = tmp_path / "upload.jpg"
    shutil.copyfile(indexed, query)
    expected = radsearch.similar(query, index=served["index"], k=4, backend=served["backend"])
    _open(page, served, "similar")
    page.locator("input[type=file]").set_input_files(str(query))
    page.get_by_label("Studies", exact=True).fill("4")
    page.get_by_role("button", name="Find similar cases").click()
    assert _study_headings(page, len(expected.hits)) == [hit.study for hit in expected.hits]
    assert not list(served["scratch"].glob("radsearch-ui-*"))  # the uploaded image is not kept


@needs_browser
def test_classify_a_study_against_a_label_set(page, served: dict) -> None:
    study = radsearch.search(QUERY, index=served["index"], k=1, backend=served["backend"]).hits[0].study
    expected = radsearch.classify(study, label_set="modality", index=served["index"])
    _open(page, served, "classify")
    page.get_by_label("or an indexed study (UID, key or file)", exact=True).fill(study)
    page.get_by_label("or a built-in label set", exact=True).click()
    page.get_by_role("option", name="modality").click()
    page.get_by_role("button", name="Classify").click()
    page.get_by_text("most probable", exact=False).wait_for(timeout=LOAD_S * 1000)
    page.get_by_text(f"most probable {expected.top}", exact=False).wait_for(timeout=30_000)


@needs_browser
def test_a_bad_filter_is_one_clear_error(page, served: dict) -> None:
    _open(page, served, "")
    page.get_by_label("Find studies showing", exact=True).fill(QUERY)
    page.get_by_text("Filters").click()
    page.get_by_label("Date from", exact=True).fill("2020-13-45")
    page.get_by_role("button", name="Search").click()
    alert = page.get_by_role("alert").first
    alert.wait_for(timeout=30_000)
    assert "2020-13-45" in alert.inner_text()
    assert not page.locator("h3").count()


@needs_browser
def test_index_page_counts(page, served: dict) -> None:
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
