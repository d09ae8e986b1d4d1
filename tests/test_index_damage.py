"""Damage an index can meet, and how it detects and repairs each: a catalog, its vector file, FAISS
codes or a store database cut short or overwritten, a back end out of step with its catalog
(deleted, an older copy put back),
a read-only index, a full disk. Each failure is one line; the index still opens and answers.

The read-only and full-disk cases run on a small tmpfs mounted by the test (root only; they skip,
saying so, where mounting is not permitted).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radsearch import Filters, check_index, label_query, search, show, similar, stats
from radsearch.errors import IndexOutOfStepWarning, RadsearchError, StoreUnavailableWarning
from radsearch.indexer import index_folder

TINY = "hashing-tiny"


def _studies(root: Path, count: int = 6) -> Path:
    """``count`` PNG studies of one image each, with a report (so every collection has points)."""
    rng = np.random.default_rng(0)
    for number in range(count):
        folder = root / f"study{number}"
        folder.mkdir(parents=True)
        Image.fromarray((rng.random((32, 32)) * 255).astype("uint8")).save(folder / "image.png")
        (folder / "report.txt").write_text(f"FINDINGS: mass number {number}. IMPRESSION: stable.")
    return root


def _run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radsearch", *args], capture_output=True,
                          text=True, timeout=timeout)


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.fixture
def indexed(tmp_path: Path) -> tuple[Path, Path]:
    root = _studies(tmp_path / "studies")
    index = tmp_path / "index"
    index_folder(root, index=index, model=TINY, workers=0)
    return root, index


def _image_hits(index: Path) -> list[str]:
    return sorted(image.path for hit in search("mass", index=index, k=20).hits
                  for image in hit.images)


# --- damaged files -------------------------------------------------------------------------------


def _cut_short(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _overwrite_start(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.write(os.urandom(4096))


@pytest.mark.parametrize("damage", [_cut_short, _overwrite_start], ids=["cut-short", "overwritten"])
def test_damaged_catalog_is_one_line_and_check_repair_lets_index_rebuild(indexed, damage):
    root, index = indexed
    expected = stats(index=index)["images"]
    damage(index / "catalog.sqlite")

    line = _one_line(_run_cli("stats", "--index", str(index)).stderr)
    assert "damaged" in line and "check --repair" in line
    with pytest.raises(RadsearchError, match="catalog.sqlite is damaged"):
        index_folder(root, index=index, model=TINY, workers=0)

    report = check_index(index)
    assert not report.ok and report.findings[0].part == "catalog"
    repaired = check_index(index, repair=True)
    assert repaired.ok and "set aside" in repaired.findings[0].message
    summary = index_folder(root, index=index, model=TINY, workers=0)
    assert summary.failures == [] and stats(index=index)["images"] == expected
    assert check_index(index).ok


def test_vector_file_cut_short_is_one_line_and_check_repair_lets_index_rebuild(indexed):
    root, index = indexed
    expected = _image_hits(index)
    _cut_short(index / "vectors.f32")

    line = _one_line(_run_cli("search", "mass", "--index", str(index)).stderr)
    assert "vectors.f32" in line and "cut short" in line and "check --repair" in line
    with pytest.raises(RadsearchError, match="vectors.f32 holds .* cut short"):
        index_folder(root, index=index, model=TINY, workers=0)
    report = check_index(index)
    assert not report.ok and "vectors.f32" in report.findings[0].message
    assert check_index(index, repair=True).ok
    summary = index_folder(root, index=index, model=TINY, workers=0)
    assert summary.failures == [] and _image_hits(index) == expected and check_index(index).ok


def _ivf(root: Path, index: Path, **extra) -> object:
    """An index whose collections keep IVF-SQ8 codes (the kind chosen from 50k vectors)."""
    return index_folder(root, index=index, model=TINY, workers=0, backend="faiss", backend_options={
        "faiss_index": "ivfsq", "faiss_params": {"nlist": 2}}, **extra)


@pytest.mark.parametrize("damage", [_cut_short, _overwrite_start, Path.unlink],
                         ids=["cut-short", "overwritten", "deleted"])
def test_damaged_or_missing_faiss_codes_are_rebuilt_from_the_catalog(tmp_path, damage):
    """The FAISS files hold codes derived from the catalog alone: whatever happens to them, a
    search rebuilds them in memory and the next run saves them again, the answers unchanged."""
    root = _studies(tmp_path / "studies")
    index = tmp_path / "index"
    _ivf(root, index)
    codes = index / "faiss" / "images.ivfsq.faiss"
    assert codes.exists() and not (index / "faiss" / "points.sqlite").exists()
    expected = _image_hits(index)
    damage(codes)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: nothing is lost
        assert _image_hits(index) == expected
    assert check_index(index).ok
    _ivf(root, index)
    assert codes.exists() and _image_hits(index) == expected


def test_older_faiss_codes_put_back_after_prune_are_brought_in_step(tmp_path):
    root = _studies(tmp_path / "studies")
    index = tmp_path / "index"
    _ivf(root, index)
    older = tmp_path / "faiss-copy"
    shutil.copytree(index / "faiss", older)
    shutil.rmtree(root / "study0")
    _ivf(root, index, prune=True)
    pruned = _image_hits(index)
    assert not any("study0" in path for path in pruned)
    shutil.rmtree(index / "faiss")
    shutil.copytree(older, index / "faiss")

    assert _image_hits(index) == pruned and check_index(index).ok


# --- back end out of step --------------------------------------------------------------------------


def test_deleted_qdrant_edge_collection_is_warned_about_and_brought_back(tmp_path):
    pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
    root = _studies(tmp_path / "studies")
    index = tmp_path / "index"
    index_folder(root, index=index, model=TINY, workers=0, backend="qdrant-edge")
    expected = _image_hits(index)
    shutil.rmtree(index / "qdrant-edge" / "images")

    with pytest.warns(IndexOutOfStepWarning, match="lacks collection images"):
        stats(index=index)
    assert not check_index(index).ok
    summary = index_folder(root, index=index, model=TINY, workers=0)
    assert any("lacks collection images" in w for w in summary.warnings)
    assert _image_hits(index) == expected and check_index(index).ok


# --- a small file system of our own: read-only, full ------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A tmpfs (200 MB, or the test's ``disk_mb`` mark; pages are used only as written) mounted
    for the test, unmounted after."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8): the read-only and full-disk cases "
                    "are not run here")
    marker = request.node.get_closest_marker("disk_mb")
    size = marker.args[0] if marker else 200
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()}): the read-only and "
                    "full-disk cases are not run")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _remount(mount: Path, option: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{option}", str(mount)], check=True)


@pytest.mark.disk_mb(1000)
@pytest.mark.parametrize("backend", ["faiss", "qdrant-edge"])
def test_read_only_index_answers_and_index_says_so_in_one_line(small_disk, tmp_path, backend):
    if backend == "qdrant-edge":
        pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
    root = _studies(tmp_path / "studies")
    index = small_disk / "index"
    index_folder(root, index=index, model=TINY, workers=0, backend=backend)
    expected = _image_hits(index)
    _remount(small_disk, "ro")

    assert stats(index=index)["images"] == 6
    with _store_unavailable(backend):
        assert _image_hits(index) == expected
    if backend == "qdrant-edge":  # Edge writes its segments even to search: the catalog answers
        result = _run_cli("search", "mass", "--index", str(index))
        assert result.returncode == 0 and "study" in result.stdout
        line = _one_line(result.stderr)
        assert "read-only file system" in line and str(small_disk) in line
        assert "answering from the catalog" in line
    result = _run_cli("index", str(root), "--index", str(index), "--model", TINY, "--workers", "0")
    assert result.returncode == 1
    assert "read-only" in _one_line(result.stderr)


def _fill(mount: Path, leave: int) -> Path:
    """Fill the disk until ``leave`` bytes are free."""
    filler = mount / "filler"
    free = shutil.disk_usage(mount).free
    with open(filler, "wb") as handle:
        remaining = max(0, free - leave)
        chunk = b"\0" * (1 << 20)
        while remaining > 0:
            remaining -= handle.write(chunk[: min(len(chunk), remaining)])
    return filler


def _leftovers(index: Path) -> list[Path]:
    return [p for p in index.rglob("*") if ".tmp" in p.name]


# Qdrant Edge's files are sparse (about 180 MB declared per collection, a few MB written): its
# room check wants the holes free, so its disk is larger, and one case leaves less than them.
@pytest.mark.parametrize(("backend", "leave_kb"), [
    ("faiss", 0), ("faiss", 64), ("faiss", 512),
    pytest.param("qdrant-edge", 0, marks=pytest.mark.disk_mb(1000)),
    pytest.param("qdrant-edge", 300 * 1024, marks=pytest.mark.disk_mb(1000)),
])
def test_full_disk_is_one_line_and_the_next_run_with_space_completes(small_disk, tmp_path,
                                                                      backend, leave_kb):
    if backend == "qdrant-edge":
        pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
    first = _studies(tmp_path / "studies", count=3)
    index = small_disk / "index"
    index_folder(first, index=index, model=TINY, workers=0, backend=backend)
    before = _image_hits(index)
    _studies(tmp_path / "more", count=12)
    for folder in (tmp_path / "more").iterdir():
        folder.rename(first / f"more-{folder.name}")
    filler = _fill(small_disk, leave_kb * 1024)

    result = _run_cli("index", str(first), "--index", str(index), "--model", TINY,
                      "--workers", "0")
    assert result.returncode in (0, 1), result.stderr  # never a crash (SIGBUS: -7)
    print(f"\n{backend} with {leave_kb} KB free: exit {result.returncode} {result.stderr.strip()}")
    if result.returncode == 1:
        line = _one_line(result.stderr)
        assert str(small_disk) in line and ("no space left" in line or "not enough space" in line)
        assert _leftovers(index) == []
        _answers_or_says_why(index, backend, before)
    filler.unlink()

    summary = index_folder(first, index=index, model=TINY, workers=0)
    assert summary.failures == []
    assert stats(index=index)["images"] == 15
    assert len(_image_hits(index)) == 15 and _leftovers(index) == []
    assert check_index(index).ok


def _answers_or_says_why(index: Path, backend: str, before: list[str]) -> None:
    """Every back end answers from the last complete state on a full disk (Qdrant Edge, which
    cannot load its shards there without risking SIGBUS, through the catalog)."""
    with _store_unavailable(backend):
        assert set(before) <= set(_image_hits(index))


def _store_unavailable(backend: str) -> contextlib.AbstractContextManager:
    """Qdrant Edge, which writes to its files even to search, warns that the catalog answers."""
    if backend != "qdrant-edge":
        return contextlib.nullcontext()
    return pytest.warns(StoreUnavailableWarning, match="meanwhile answering from the catalog")


def _ranked(hits) -> list[tuple[float, str]]:
    return [(round(getattr(hit, "score", getattr(hit, "probability", 0.0)), 4), hit.study)
            for hit in hits]


def _answers(index: Path) -> dict:
    """What searches, similar cases, label queries and ``show`` answer, and every point of every
    collection as a search over all of them returns it (score, payload), in comparable form."""
    from radsearch.index_handle import open_index
    from radsearch.storage.backends.base import PointFilter
    from radsearch.storage.catalog import COLLECTIONS

    mr = Filters(modality="MR")
    first = search("shoulder", index=index, k=3).hits[0].study
    answers = {
        "images": _ranked(search("pleural effusion", index=index, k=5).hits),
        "reports": _ranked(search("pleural effusion", index=index, k=5, target="reports").hits),
        "filtered": _ranked(search("shoulder", index=index, k=5, filters=mr).hits),
        "dated": _ranked(search("chest", index=index, k=5,
                                filters=Filters(date_from="1990-01-01")).hits),
        "similar": _ranked(similar(first, index=index, k=5).hits),
        "label": _ranked(label_query("CT", labels="CT, MRI, X-ray", min_prob=0.2,
                                     index=index).hits),
        "label-filtered": _ranked(label_query("MRI", labels="CT, MRI, X-ray", min_prob=0.1,
                                              filters=mr, index=index).hits),
        "show": show(first, index=index).to_dict(),
    }
    with open_index(index) as opened:
        store = opened.store
        query = opened.encoder.encode_texts(["pleural effusion"])[0]
        for name in COLLECTIONS:
            answers[name + " points"] = {hit.id: (round(hit.score, 4), hit.payload)
                                         for hit in store.backend.search(name, query, 10_000)}
            answers[name + " MR"] = (store.backend.count(name, mr.point_filter()), sorted(
                r.id for r in store.backend.fetch(name, mr.point_filter(), 10_000)))
        answers["studies fetched"] = sorted(
            (r.id, r.vector.round(5).tolist())
            for r in store.backend.fetch("studies", PointFilter(), 10_000, with_vectors=True))
    return answers


def _same_up_to_ties(found: dict, expected: dict) -> None:
    """Equal, but for the order of equal scores in ranked lists and, at a list's lowest score,
    which of the tied studies made the cut (Qdrant orders ties its own way)."""
    assert found.keys() == expected.keys()
    for name, value in expected.items():
        if not (isinstance(value, list) and value and isinstance(value[0][0], float)):
            assert found[name] == value, name
            continue
        assert [score for score, _ in found[name]] == [score for score, _ in value], name
        cut = value[-1][0]
        assert sorted(pair for pair in found[name] if pair[0] > cut) == sorted(
            pair for pair in value if pair[0] > cut), name


@pytest.mark.disk_mb(1000)
def test_qdrant_edge_on_a_full_disk_answers_from_the_catalog_as_it_did(small_disk, tmp_path):
    """Loading an Edge shard writes to its mapped files, so on a full disk the store is not
    opened: the catalog answers instead, with what the store answered before the disk filled."""
    pytest.importorskip("qdrant_edge", reason="qdrant-edge-py is not installed")
    from radsearch.samples import sample_studies_path

    root = tmp_path / "studies"
    shutil.copytree(sample_studies_path(), root, ignore=shutil.ignore_patterns("README.md"))
    index = small_disk / "index"
    index_folder(root, index=index, model=TINY, workers=0, backend="qdrant-edge")
    expected = _answers(index)
    assert all(expected[name] for name in ("images", "reports", "filtered", "similar", "label"))
    filler = _fill(small_disk, 0)

    with pytest.warns(StoreUnavailableWarning, match="not enough space.*from the catalog"):
        _same_up_to_ties(_answers(index), expected)
    result = _run_cli("search", "pleural effusion", "--index", str(index))
    assert result.returncode == 0 and "study" in result.stdout
    line = _one_line(result.stderr)
    assert str(small_disk) in line and "answering from the catalog" in line
    result = _run_cli("index", str(root), "--index", str(index), "--model", TINY, "--workers", "0")
    assert result.returncode in (0, 1)  # nothing new to write: it may finish without writing
    if result.returncode == 1:
        assert str(small_disk) in _one_line(result.stderr)
    filler.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreUnavailableWarning)  # the store itself again
        _same_up_to_ties(_answers(index), expected)
    assert check_index(index).ok


def test_first_run_on_a_full_disk_leaves_an_index_that_says_it_holds_nothing(small_disk, tmp_path):
    root = _studies(tmp_path / "studies", count=2)
    index = small_disk / "index"
    filler = _fill(small_disk, 0)
    result = _run_cli("index", str(root), "--index", str(index), "--model", TINY, "--workers", "0")
    assert result.returncode == 1 and "no space left" in _one_line(result.stderr)
    if (index / "catalog.sqlite").exists():
        line = _one_line(_run_cli("stats", "--index", str(index)).stderr)
        assert "no radsearch index here" in line
    filler.unlink()
    index_folder(root, index=index, model=TINY, workers=0)
    assert stats(index=index)["images"] == 2
