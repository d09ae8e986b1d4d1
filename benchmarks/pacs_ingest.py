"""Index throughput from a PACS against from disk, the same DICOM instances, in one run.

    python benchmarks/pacs_ingest.py [--corpus ../shared/data/dicom_series] [--model hashing-tiny]
                                     [--workers N] [--concurrency 4]

Starts a private Orthanc (Debian's orthanc and orthanc-dicomweb) on 127.0.0.1, uploads every DICOM
instance of the corpus that it accepts (one per SOP Instance UID, as a PACS keeps them), then
indexes the same instances into three fresh indexes: from a folder holding them (`index_folder`), and from Orthanc
over DICOMweb and over DIMSE (`index_pacs`: the listing and the fetches included). Printed:
studies/s and images/s of each, each PACS run / disk, and how long listing the PACS takes with and
without the attributes that tell an instance changed under the same UID.
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

import pydicom  # noqa: E402

from radsearch.indexer import default_workers, index_folder  # noqa: E402
from radsearch.indexer.pacs import index_pacs, open_source  # noqa: E402
from radsearch.indexer.pacs_source import PacsQuery  # noqa: E402
from tests.orthanc_server import PASSWORD, USER, OrthancMissing, OrthancServer  # noqa: E402


def unique_instances(corpus: Path) -> list[Path]:
    """The DICOM files of ``corpus``, the first of each SOP Instance UID (Orthanc keeps one)."""
    seen: set[str] = set()
    files = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        try:
            uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        except Exception:  # noqa: BLE001 - not DICOM (NIfTI ground truths sit beside the series)
            continue
        if uid not in seen:
            seen.add(uid)
            files.append(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/dicom_series")
    parser.add_argument("--model", default="hashing-tiny")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    files = unique_instances(args.corpus)
    if not files:
        sys.exit(f"{args.corpus}: no DICOM file found")
    os.environ["RADSEARCH_DICOMWEB_USER"] = USER
    os.environ["RADSEARCH_DICOMWEB_PASSWORD"] = PASSWORD
    with tempfile.TemporaryDirectory(prefix="radsearch-pacs-bench-") as scratch:
        scratch = Path(scratch)
        os.environ.setdefault("RADSEARCH_KEY_DIR", str(scratch / "keys"))
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
            from_disk = index_folder(disk, index=scratch / "disk-index", model=args.model,
                                     workers=args.workers)
            from_pacs = index_pacs(server.dicomweb, index=scratch / "pacs-index", model=args.model,
                                   workers=args.workers, concurrency=args.concurrency)
            from_dimse = index_pacs(server.dimse, index=scratch / "dimse-index", model=args.model,
                                    workers=args.workers)
            listing = {(name, asked): _listing_seconds(address, asked)
                       for name, address in (("DICOMweb", server.dicomweb), ("DIMSE", server.dimse))
                       for asked in (True, False)}
        finally:
            server.stop()
        studies = _studies(from_disk.index)
    print(f"{len(files)} instances, {studies} studies, model {args.model}, "
          f"{args.workers} decoding workers, {args.concurrency} concurrent WADO-RS requests")
    runs = (("disk", from_disk), ("Orthanc (DICOMweb)", from_pacs), ("Orthanc (DIMSE)", from_dimse))
    for name, summary in runs:
        print(f"{name:>20}: {summary.seconds:6.2f} s  {studies / summary.seconds:7.2f} studies/s  "
              f"{summary.images / summary.seconds:8.1f} images/s  ({summary.images} images, "
              f"{summary.failed} failed)")
    print(f"{'DICOMweb / disk':>20}: {from_disk.seconds / from_pacs.seconds:.2f}x throughput")
    print(f"{'DIMSE / disk':>20}: {from_disk.seconds / from_dimse.seconds:.2f}x throughput")
    for name in ("DICOMweb", "DIMSE"):
        with_version, without = listing[name, True], listing[name, False]
        print(f"{name + ' listing':>20}: {with_version:6.2f} s with the version attributes (change "
              f"detection), {without:6.2f} s without ({with_version / without:.2f}x), median of 3")
    for name, summary in runs:
        for path, reason in summary.failures:
            print(f"failed ({name}) {path}: {reason}")


def _listing_seconds(address: str, version_attributes: bool) -> float:
    """Seconds to list every instance of the PACS, with or without the attributes that tell a
    changed instance (median of 3)."""
    times = []
    for _ in range(3):
        source = open_source(address)
        if not version_attributes:
            source.version_attributes = ()
        started = time.perf_counter()
        source.list_instances(PacsQuery())
        times.append(time.perf_counter() - started)
        source.close()
    return statistics.median(times)


def _studies(index: str) -> int:
    import sqlite3

    conn = sqlite3.connect(Path(index) / "catalog.sqlite")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM studies").fetchone()[0])
    finally:
        conn.close()


if __name__ == "__main__":
    main()
