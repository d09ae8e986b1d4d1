"""A folder of hostile files: each gives one clear line in the run's summary, and the run goes on.

The corpus is generated in a temporary folder from pydicom's real test files: zero-byte, truncated,
random and pixel-less files, pixel data shorter than declared, absurd declared sizes (60000 x 60000
x 1000 frames, a 4 GB element, an 8 GB JPEG 2000 codestream), an unsupported transfer syntax,
symbolic-link loops, odd file names, a Windows-1252 report and a report of 10,000 sentences.
Unreadable permissions need a run as an unprivileged user (root reads any file), so they have
their own run.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from reading_helpers import huge_element_length, pydicom_file

from radsearch.storage import catalog
from radsearch.encoders import create_model
from radsearch.indexer import index_folder
from radsearch.indexer.discover import discover
from radsearch.indexer.report_stage import index_report_files
from radsearch.indexer.writer import put_study
from radsearch.reading import ReadError, read_file
from radsearch.reading.detect import file_meta_end
from radsearch.reports import MAX_REPORT_SENTENCES

TINY = "hashing-tiny"
LONG_REPORT_SENTENCES = 10_000
LONG_REPORT = "reports/long.txt"
UNPRIVILEGED = ("65534", "65534")  # nobody / nogroup


# --- building the corpus --------------------------------------------------------------------------


def _dicom_bytes(name: str, edit: Callable[[Dataset], None] | None = None) -> bytes:
    ds = pydicom.dcmread(pydicom_file(name))
    if edit is not None:
        edit(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def _no_pixels(ds: Dataset) -> None:
    del ds.PixelData


def _short_pixels(ds: Dataset) -> None:
    ds.Rows = 256  # MR_small's 64x64 pixel data stays


def _absurd_dimensions(ds: Dataset) -> None:
    ds.Rows = ds.Columns = 60000
    ds.NumberOfFrames = 1000


def _unsupported_syntax(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = "1.2.3.4.5.6.7"


def _absurd_codestream() -> bytes:
    """A JPEG 2000 frame whose SIZ marker declares 8,389,120 columns under a 64x64 header."""
    data = bytearray(pydicom_file("MR_small_jp2klossless.dcm").read_bytes())
    struct.pack_into(">I", data, data.find(b"\xff\x4f\xff\x51") + 8, 8_389_120)
    return bytes(data)


def deflate_bomb(inflated: int) -> bytes:
    """pydicom's deflated test file with ``inflated`` zero bytes of trailing padding, deflated."""
    data = pydicom_file("image_dfl.dcm").read_bytes()
    start = file_meta_end(data[:65536])
    dataset = zlib.decompress(data[start:], -zlib.MAX_WBITS)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflater.compress(dataset + struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, inflated))]
    zeros = bytes(2**20)
    for _ in range(inflated // len(zeros)):
        parts.append(deflater.compress(zeros))
    parts.append(deflater.flush())
    return data[:start] + b"".join(parts)


def _png(path: Path, value: int) -> None:
    Image.fromarray(np.full((48, 48), value, dtype=np.uint8)).save(path)


def long_report() -> str:
    return "FINDINGS:\n" + " ".join(
        f"Finding number {i} is stable." for i in range(LONG_REPORT_SENTENCES)
    )


# Relative path -> (entry kind, start of the expected reason).
HOSTILE: dict[str, tuple[str, str]] = {
    "hostile/empty.dcm": ("failed", "empty file (0 bytes)"),
    "hostile/truncated.dcm": ("failed", "truncated DICOM file"),
    "hostile/random.dcm": ("failed", "not a DICOM, PNG or JPEG file"),
    "hostile/no_pixels.dcm": ("failed", "no pixel data"),
    "hostile/short_pixels.dcm": ("failed", "pixel data shorter than declared"),
    "hostile/absurd_dimensions.dcm": ("failed", "declared image size 60000x60000, 1000 frame(s)"),
    "hostile/absurd_length.dcm": ("failed", "truncated DICOM file"),
    "hostile/absurd_codestream.dcm": ("failed", "compressed frame 0 declares 64x8389120 pixels"),
    "hostile/unsupported_syntax.dcm": ("failed", "unsupported transfer syntax 1.2.3.4.5.6.7"),
    "hostile/self_loop.dcm": ("failed", "unreadable: Too many levels of symbolic links"),
    "odd names/bad\nname.dcm": ("failed", "not a DICOM, PNG or JPEG file"),
    "reports/cp1252.txt": ("failed", "not valid UTF-8 text (byte 0xe9"),
}
GOOD = [
    "good/ct.dcm",
    "good/mr.dcm",
    "good/jpeg2000",  # no extension: found by its content
    "odd names/with space.dcm",
    "odd names/ünïcödé 名前.dcm",
    "odd names/new\nline.dcm",
    "odd names/-leading-dash.dcm",
    "reports/long.png",
    "reports/cp1252.png",
    "reports/plain.png",
]


def build_hostile_corpus(root: Path) -> None:
    for folder in ("good", "hostile", "odd names", "reports", "hostile/deeper"):
        (root / folder).mkdir(parents=True)
    mr = pydicom_file("MR_small.dcm").read_bytes()
    ct = pydicom_file("CT_small.dcm").read_bytes()
    files = {
        "good/ct.dcm": ct,
        "good/mr.dcm": mr,
        "good/jpeg2000": pydicom_file("JPEG2000.dcm").read_bytes(),
        "odd names/with space.dcm": mr,
        "odd names/ünïcödé 名前.dcm": ct,
        "odd names/new\nline.dcm": mr,
        "odd names/-leading-dash.dcm": ct,
        "hostile/empty.dcm": b"",
        "hostile/truncated.dcm": ct[: len(ct) * 6 // 10],
        "hostile/random.dcm": np.random.default_rng(6).integers(0, 256, 8192, np.uint8).tobytes(),
        "hostile/no_pixels.dcm": _dicom_bytes("CT_small.dcm", _no_pixels),
        "hostile/short_pixels.dcm": _dicom_bytes("MR_small.dcm", _short_pixels),
        "hostile/absurd_dimensions.dcm": _dicom_bytes("MR_small.dcm", _absurd_dimensions),
        "hostile/absurd_length.dcm": huge_element_length(),
        "hostile/absurd_codestream.dcm": _absurd_codestream(),
        "hostile/unsupported_syntax.dcm": _dicom_bytes("CT_small.dcm", _unsupported_syntax),
        "odd names/bad\nname.dcm": np.random.default_rng(7).bytes(2048),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "hostile/self_loop.dcm").symlink_to("self_loop.dcm")
    (root / "hostile/deeper/loop").symlink_to("../..")  # a folder loop: entered once only
    for name, value in (("long", 60), ("cp1252", 120), ("plain", 200)):
        _png(root / "reports" / f"{name}.png", value)
    (root / LONG_REPORT).write_text(long_report(), encoding="utf-8")
    (root / "reports/cp1252.txt").write_bytes("Fénêtre pleurale libre – naïve.".encode("cp1252"))
    (root / "reports/plain.txt").write_text("IMPRESSION: No acute abnormality.", encoding="utf-8")


# --- the run --------------------------------------------------------------------------------------


def _entries(summary) -> list[tuple[str, str, str]]:
    """(kind, path, reason) of every line the run's summary gives about a file."""
    entries = [("failed", path, reason) for path, reason in summary.failures]
    entries += [("skipped", path, reason) for path, reason in summary.skips]
    entries += [("warning", *warning.partition(": ")[::2]) for warning in summary.warnings]
    return entries


def _file_status(index: Path) -> dict[str, str]:
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        return dict(conn.execute("SELECT path, status FROM files"))


def test_hostile_corpus_gives_one_line_each_and_the_run_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    build_hostile_corpus(root)
    index = tmp_path / "index"

    summary = index_folder(root, index=index, model=TINY, workers=0)

    entries = _entries(summary)
    handled = []
    for name, (kind, reason_start) in HOSTILE.items():
        path = str(root / name)
        about = [e for e in entries if e[1] == path]
        assert len(about) == 1, f"{name!r}: {about}"
        entry_kind, _, reason = about[0]
        assert entry_kind == kind and reason.startswith(reason_start), f"{name!r}: {reason!r}"
        assert reason and "\n" not in reason and "Traceback" not in reason
        handled.append(name)
    named = {str(root / name) for name in HOSTILE} | {str(root / LONG_REPORT)}
    assert [e for e in entries if e[1] not in named] == []  # no line about anything else
    assert not any("/loop/" in e[1] for e in entries)

    status = _file_status(index)
    assert {name: status.get(str(root / name)) for name in GOOD} == dict.fromkeys(GOOD, "indexed")
    assert not any("/loop/" in path for path in status)  # the folder loop was entered once
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        (long_sentences,) = conn.execute(
            "SELECT COUNT(*) FROM sentences JOIN reports ON reports.id = sentences.report_id "
            "JOIN files ON files.id = reports.file_id WHERE files.path = ?",
            (str(root / LONG_REPORT),),
        ).fetchone()
    assert long_sentences == MAX_REPORT_SENTENCES  # indexed, capped
    # The long report is handled too: its warning line is checked by the tests below.
    print(f"\nhostile files handled / tried: {len(handled) + 1} / {len(HOSTILE) + 1}")


def _long_report_study(folder: Path) -> None:
    folder.mkdir()
    _png(folder / "long.png", 60)
    (folder / "long.txt").write_text(long_report(), encoding="utf-8")


TRUNCATED = f"report truncated to {MAX_REPORT_SENTENCES} of {LONG_REPORT_SENTENCES} sentences"


def test_long_report_is_capped_with_a_warning(tmp_path: Path) -> None:
    """The report stage indexes the first sentences and says, in one line, what it left out."""
    folder = tmp_path / "study"
    _long_report_study(folder)
    found = [f for f in discover(folder) if f.kind == "report"]
    conn = catalog.connect(tmp_path / "catalog.sqlite")
    put_study(conn, f"file:{folder / 'long.png'}")
    warnings: list[tuple[str, str]] = []

    outcomes = index_report_files(conn, create_model(TINY), found,
                                  on_warning=lambda path, text: warnings.append((path, text)))

    assert outcomes == [(str(folder / "long.txt"), None)]
    assert warnings == [(str(folder / "long.txt"), TRUNCATED)]
    assert conn.execute("SELECT COUNT(*) FROM sentences").fetchone()[0] == MAX_REPORT_SENTENCES


def test_long_report_warning_reaches_the_run_summary(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    _long_report_study(folder)

    summary = index_folder(folder, index=tmp_path / "index", model=TINY, workers=0)

    assert (summary.failures, summary.skips) == ([], [])
    assert summary.warnings == [f"{folder / 'long.txt'}: {TRUNCATED}"]


@pytest.mark.parametrize(
    ("build", "reason_start"),
    [
        (lambda: _dicom_bytes("MR_small.dcm", _absurd_dimensions), "declared image size 60000x60000"),
        (huge_element_length, "truncated DICOM file"),
        (_absurd_codestream, "compressed frame 0 declares 64x8389120 pixels"),
    ],
    ids=["60000x60000x1000", "4-GB-element", "8-GB-codestream"],
)
def test_absurd_sizes_are_refused_before_allocating(tmp_path: Path, build, reason_start) -> None:
    path = tmp_path / "absurd.dcm"
    path.write_bytes(build())
    tracemalloc.start()
    try:
        with pytest.raises(ReadError, match=f"^{reason_start}"):
            read_file(path, salt="s")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB while refusing a {path.stat().st_size} B file"


def test_deflate_bomb_is_refused_before_inflating(tmp_path: Path) -> None:
    # 100 MiB of padding in a ~100 kB file; with max_pixels 2**20 the reader allows 66 MiB.
    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflate_bomb(100 * 2**20))
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ReadError, match="^deflated data set inflates to over"):
            read_file(path, salt="s", max_pixels=2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


# --- unreadable permissions: a run as an unprivileged user ----------------------------------------

_RUN_INDEX = (
    "import json, sys\n"
    "from radsearch.indexer import index_folder\n"
    "summary = index_folder(sys.argv[1], index=sys.argv[2], model=sys.argv[3], workers=0)\n"
    "print(json.dumps(summary.to_dict()))\n"
)


def _unprivileged_prefix() -> list[str] | None:
    """A command prefix that runs as nobody, or None when this user cannot switch."""
    candidates = [
        ["setpriv", f"--reuid={UNPRIVILEGED[0]}", f"--regid={UNPRIVILEGED[1]}", "--clear-groups"],
        ["runuser", "-u", "nobody", "--"],
    ]
    for prefix in candidates:
        if shutil.which(prefix[0]) is None:
            continue
        probe = subprocess.run([*prefix, "id", "-u"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() != "0":
            return prefix
    return None


def _index_as_unprivileged(root: Path, index: Path, home: Path) -> dict:
    if os.geteuid() != 0:
        return index_folder(root, index=index, model=TINY, workers=0).to_dict()
    prefix = _unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root and neither setpriv nor runuser can switch to nobody: "
                    "root reads files whatever their permissions")
    # The run's hash keys live in its own home: nobody cannot reach the suite's key folder.
    env = {**os.environ, "HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "RADSEARCH_KEY_DIR": str(home / "keys")}
    run = subprocess.run(
        [*prefix, sys.executable, "-c", _RUN_INDEX, str(root), str(index), TINY],
        capture_output=True, text=True, env=env, cwd=home, timeout=300,
    )
    if run.returncode != 0 and "Permission denied" in run.stderr and "radsearch" not in run.stderr:
        pytest.skip(f"nobody cannot run this Python: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture
def world_writable() -> Iterator[Path]:
    """A folder outside pytest's private tmp (mode 0700), where nobody may write."""
    folder = Path(tempfile.mkdtemp(prefix="radsearch-unprivileged-"))
    folder.chmod(0o777)
    yield folder
    for path in folder.rglob("*"):  # give back what the test locked, so that it can be removed
        if not path.is_symlink():
            path.chmod(0o777)
    shutil.rmtree(folder)


def test_unreadable_file_gives_one_line(world_writable: Path) -> None:
    root = world_writable / "studies"
    root.mkdir()
    mr = pydicom_file("MR_small.dcm").read_bytes()
    (root / "good.dcm").write_bytes(mr)
    locked = root / "locked.dcm"
    locked.write_bytes(mr)
    locked.chmod(0)
    home = world_writable / "home"
    home.mkdir()
    for path in (root, root / "good.dcm", home):
        path.chmod(0o777 if path.is_dir() else 0o666)

    summary = _index_as_unprivileged(root, world_writable / "index", home)

    assert summary["failures"] == [{"path": str(locked), "reason": "unreadable: permission denied"}]
    assert summary["indexed"] == 1
    print("\nunreadable-permission files handled / tried: 1 / 1")


def test_unreadable_folder_gives_one_line(world_writable: Path) -> None:
    root = world_writable / "studies"
    locked = root / "locked"
    locked.mkdir(parents=True)
    (locked / "inside.dcm").write_bytes(pydicom_file("MR_small.dcm").read_bytes())
    locked.chmod(0)
    root.chmod(0o777)
    home = world_writable / "home"
    home.mkdir(mode=0o777)
    home.chmod(0o777)

    summary = _index_as_unprivileged(root, world_writable / "index", home)

    assert [f["path"] for f in summary["failures"]] == [str(locked)]
    assert summary["failures"][0]["reason"].startswith("unreadable")


def test_file_name_not_utf8_gives_one_line(tmp_path: Path) -> None:
    root = tmp_path / "studies"
    root.mkdir()
    mr = pydicom_file("MR_small.dcm").read_bytes()
    (root / "good.dcm").write_bytes(mr)
    Path(os.fsdecode(bytes(root) + b"/caf\xe9.dcm")).write_bytes(mr)  # Latin-1 "café"

    summary = index_folder(root, index=tmp_path / "index", model=TINY, workers=0)

    assert summary.indexed == 1
    [(path, reason)] = summary.failures
    assert "caf" in path and path.isprintable() and reason and "\n" not in reason
