"""How long looking at a study indexed from a PACS takes: its pictures fetched on demand (cold: no
cache, nothing found yet in this process), from the cache, and from disk, in one run.

    python benchmarks/pacs_fetch.py [--corpus ../shared/data/dicom_series] [--rounds 3]

Starts a private Orthanc (Debian's orthanc and orthanc-dicomweb) on 127.0.0.1, uploads the corpus's
DICOM instances, indexes them from a folder and from Orthanc over DICOMweb and DIMSE, then for the
study with the most images times (median of --rounds): the first picture of the study cold (the
study found again in the PACS by its hashed UID, its instances listed, one fetched and decoded),
every picture of the study cold, every picture again from the cache, every picture from disk, and
the study's link (`show` with $RADSEARCH_PACS_LINK, the UID found in the PACS).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.pacs_ingest import unique_instances  # noqa: E402
from radsearch import show  # noqa: E402
from radsearch.indexer import index_folder  # noqa: E402
from radsearch.indexer.pacs import index_pacs  # noqa: E402
from radsearch.pacs_fetch import forget_fetchers  # noqa: E402
from radsearch.previews import image_preview, split_image_ref  # noqa: E402
from tests.orthanc_server import PASSWORD, USER, OrthancMissing, OrthancServer  # noqa: E402


def _images(index: Path, study: str) -> list[tuple[str, int]]:
    detail = show(study, index=index)
    return [split_image_ref(image) for series in detail.series for image in series.images]


def _largest_study(index: Path) -> str:
    import sqlite3

    conn = sqlite3.connect(index / "catalog.sqlite")
    try:
        return conn.execute("SELECT studies.key FROM studies JOIN images ON images.study_id = "
                            "studies.id GROUP BY studies.id ORDER BY COUNT(*) DESC LIMIT 1"
                            ).fetchone()[0]
    finally:
        conn.close()


def _timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _cold(cache: Path) -> None:
    forget_fetchers()
    shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/dicom_series")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    files = unique_instances(args.corpus)
    os.environ["RADSEARCH_DICOMWEB_USER"] = USER
    os.environ["RADSEARCH_DICOMWEB_PASSWORD"] = PASSWORD
    with tempfile.TemporaryDirectory(prefix="radsearch-pacs-fetch-") as scratch:
        scratch = Path(scratch)
        os.environ.setdefault("RADSEARCH_KEY_DIR", str(scratch / "keys"))
        # One key for every index: their study keys agree.
        os.environ["RADSEARCH_KEY"] = os.environ.get("RADSEARCH_KEY") or "b" * 64
        cache = scratch / "cache"
        os.environ["RADSEARCH_PACS_CACHE"] = str(cache)
        os.environ["RADSEARCH_PACS_LINK"] = "https://viewer.invalid/?study={StudyInstanceUID}"
        try:
            server = OrthancServer(scratch / "orthanc")
        except OrthancMissing as missing:
            sys.exit(str(missing))
        server.start()
        try:
            files = server.upload(files, refused_ok=True)
            disk = scratch / "disk"
            for number, path in enumerate(files):
                target = disk / f"{number:04d}" / path.name
                target.parent.mkdir(parents=True)
                shutil.copyfile(path, target)
            disk_index = scratch / "disk-index"
            index_folder(disk, index=disk_index, model="hashing-tiny", workers=0)
            study = _largest_study(disk_index)
            on_disk = _images(disk_index, study)
            rows = [("disk", None, [_timed(lambda: [image_preview(*ref) for ref in on_disk])
                                    for _ in range(args.rounds)])]
            for name, address in (("DICOMweb", server.dicomweb), ("DIMSE", server.dimse)):
                index = scratch / f"{name}-index"
                index_pacs(address, index=index, model="hashing-tiny", workers=0)
                keys = _images(index, study)
                first, every, cached, link = [], [], [], []
                for _ in range(args.rounds):
                    _cold(cache)
                    first.append(_timed(lambda: image_preview(*keys[0], index=index)))
                    _cold(cache)
                    every.append(_timed(lambda: [image_preview(*key, index=index)
                                                 for key in keys]))
                    forget_fetchers()
                    cached.append(_timed(lambda: [image_preview(*key, index=index)
                                                  for key in keys]))
                    forget_fetchers()
                    link.append(_timed(lambda: show(study, index=index).link))
                rows += [(name, "first picture, cold", first), (name, "every picture, cold", every),
                         (name, "every picture, cached", cached), (name, "link (show)", link)]
        finally:
            forget_fetchers()
            server.stop()
    print(f"study of {len(on_disk)} images ({len(files)} instances in Orthanc), "
          f"median of {args.rounds} rounds")
    reference = statistics.median(rows[0][2])
    for name, what, times in rows:
        median = statistics.median(times)
        label = f"{name}: {what}" if what else f"{name}: every picture"
        count = 1 if what and what.startswith("first") else len(on_disk)
        print(f"{label:>34}: {median * 1000:8.1f} ms  ({median * 1000 / count:6.1f} ms an image"
              + ("" if what and what.startswith(("first", "link")) else
                 f", {median / reference:5.2f}x disk") + ")")


if __name__ == "__main__":
    main()
