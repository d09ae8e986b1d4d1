"""A run's processes and inputs that could stop or corrupt it: the write lock, decoding workers
after the run is killed, Ctrl-C, special files (named pipes), hostile JSON reports, and warnings
that must reach the summary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radsearch import search, stats
from radsearch.encoders import create_model
from radsearch.errors import RadsearchError
from radsearch.indexer import index_folder
from radsearch.storage.store import Store

TINY = "hashing-tiny"


def _pngs(folder: Path, count: int, size: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    for number in range(count):
        pixels = (rng.random((size, size)) * 255).astype("uint8")
        Image.fromarray(pixels).save(folder / f"image{number:04d}.png", compress_level=0)
    return folder


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "radsearch", *args]


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# --- the write lock --------------------------------------------------------------------------------


def test_deleting_the_lock_file_lets_no_second_writer_in(tmp_path):
    describe = create_model(TINY).describe()
    index = tmp_path / "index"
    with Store.open_for_writing(index, describe):
        for leftover in index.glob("*.lock"):
            leftover.unlink()  # what someone tidying the folder might do
        with pytest.raises(RadsearchError, match="another radsearch run is writing"):
            Store.open_for_writing(index, describe)
    Store.open_for_writing(index, describe).close()  # released with the first


# --- special files ---------------------------------------------------------------------------------


def test_a_named_pipe_is_skipped_with_a_reason_and_never_opened(tmp_path):
    root = _pngs(tmp_path / "studies", 2)
    os.mkfifo(root / "pipe.dcm")
    os.mkfifo(root / "no-extension")
    index = tmp_path / "index"
    # A subprocess, so that a hang is a failure after the timeout rather than a stuck test run.
    run = subprocess.run(_cli("index", str(root), "--index", str(index), "--model", TINY,
                              "--workers", "1"), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    skipped = [line for line in run.stderr.splitlines() if line.startswith("skipped")]
    assert sorted(skipped) == [f"skipped {root / 'no-extension'}: not a regular file (named pipe)",
                               f"skipped {root / 'pipe.dcm'}: not a regular file (named pipe)"]
    assert stats(index=index)["images"] == 2
    again = index_folder(root, index=index, model=TINY, workers=0)
    assert (again.skipped, again.unchanged) == (0, 4)  # recorded: not reported again


def test_similar_on_a_named_pipe_is_one_line(tmp_path):
    root = _pngs(tmp_path / "studies", 2)
    index = tmp_path / "index"
    index_folder(root, index=index, model=TINY, workers=0)
    pipe = tmp_path / "query.png"
    os.mkfifo(pipe)
    run = subprocess.run(_cli("similar", str(pipe), "--index", str(index)), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    assert _one_line(run.stderr) == f"error: {pipe}: not a regular file (named pipe)"


# --- hostile JSON reports --------------------------------------------------------------------------

HOSTILE_REPORTS = {
    "deep": '{"report": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "deep-object": '{"findings": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}",
    "huge-number": '{"report": ' + "9" * 5000 + "}",
    "huge-section": '{"report": {"findings": ' + "9" * 4400 + "}}",
}


def test_a_bad_json_report_is_its_files_failure_and_the_run_goes_on(tmp_path):
    root = tmp_path / "studies"
    for name, text in HOSTILE_REPORTS.items():
        _pngs(root / name, 1)
        (root / name / "image0000.png").rename(root / name / "scan.png")
        (root / name / "scan.json").write_text(text)
    good = _pngs(root / "good", 1)
    (good / "report.json").write_text('{"findings": "A small mass.", "impression": "Stable."}')
    index = tmp_path / "index"

    summary = index_folder(root, index=index, model=TINY, workers=0)

    failures = dict(summary.failures)
    assert sorted(failures) == sorted(str(root / name / "scan.json") for name in HOSTILE_REPORTS)
    for reason in failures.values():
        assert reason.startswith("invalid JSON") and "\n" not in reason
    assert summary.reports == 1
    # The back end was synced: the images and the good report are searchable.
    assert len(search("mass", index=index, k=10).hits) == len(HOSTILE_REPORTS) + 1
    assert search("small mass", index=index, k=1, target="reports").hits


# --- warnings that reach the summary ---------------------------------------------------------------


def _multiframe(path: Path, frames: int) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"  # multi-frame grayscale byte SC
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "OT"
    ds.Rows = ds.Columns = 8
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(0).integers(0, 255, (frames, 8, 8), dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_sampled_frames_warning_reaches_the_summary(tmp_path):
    root = tmp_path / "studies"
    root.mkdir()
    _multiframe(root / "cine.dcm", 600)

    summary = index_folder(root, index=tmp_path / "index", model=TINY, workers=0)

    assert summary.failures == [] and summary.images == 512
    assert summary.warnings == [f"{root / 'cine.dcm'}: sampled 512 of 600 frames evenly"]


# --- processes: kill -9 and Ctrl-C -----------------------------------------------------------------


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_run(root: Path, index: Path, workers: int) -> tuple[subprocess.Popen, set[int]]:
    """An index run in its own process group, once its decoding workers are busy."""
    run = subprocess.Popen(_cli("index", str(root), "--index", str(index), "--model", TINY,
                                "--workers", str(workers)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        children = _children(run.pid)
        if len(children) > workers and _count_files(index) > 0:
            return run, children
        if run.poll() is not None:
            pytest.fail(f"the run ended before it could be stopped: {run.stderr.read()}")
        time.sleep(0.05)
    run.kill()
    pytest.fail("no worker started within 90 s")


def _count_files(index: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{index / 'catalog.sqlite'}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM files").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def big_pngs(tmp_path_factory) -> Path:
    """Enough large images that a run with two workers lasts a few seconds."""
    return _pngs(tmp_path_factory.mktemp("big") / "studies", 160, size=768)


def test_workers_die_with_a_run_killed_with_sigkill(big_pngs, tmp_path):
    run, children = _start_run(big_pngs, tmp_path / "index", workers=2)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.1)
    left = [pid for pid in children if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "decoding workers outlived the killed run"


def test_ctrl_c_is_one_line_exit_130_and_the_run_resumes(big_pngs, tmp_path):
    index = tmp_path / "index"
    run, children = _start_run(big_pngs, index, workers=2)
    os.killpg(run.pid, signal.SIGINT)  # what a terminal sends the foreground process group
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130
    assert _one_line(stderr).startswith("interrupted:")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in children):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)

    summary = index_folder(big_pngs, index=index, model=TINY, workers=0)
    assert summary.failures == [] and summary.indexed + summary.unchanged == 160
    assert stats(index=index)["images"] == 160
