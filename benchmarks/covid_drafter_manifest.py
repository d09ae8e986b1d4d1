"""covid_cxr manifest for training the adapter drafter without choosing on the reported split.

    python benchmarks/covid_drafter_manifest.py [--manifests /tmp/radsearch-manifests]

covid_cxr has train and dev only, and dev is what is reported, so the kept epoch cannot be chosen
on it. This writes ``covid_drafter.csv`` beside the manifests: covid_cxr's train rows, the quarter
of their patients that tunes the retrieval drafter (``tune_report_drafter.covid_tuning_manifest``)
marked ``dev`` (the trainer's kept epoch is chosen on them), the other three quarters ``train``;
covid_cxr's dev rows are left out, and so are train rows whose image is also a dev row's (two; the
evaluation leaves them out of the corpus too). Then:

    radsearch train drafter --manifest /tmp/radsearch-manifests/covid_drafter.csv --out RUN ...
    radsearch eval report --manifest /tmp/radsearch-manifests/covid_cxr.csv --split dev \
        --corpus-split train --drafter RUN ...
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from tune_report_drafter import covid_tuning_manifest  # benchmarks/ is on sys.path when run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", type=Path, default=Path("/tmp/radsearch-manifests"))
    args = parser.parse_args()
    out = args.manifests / "covid_drafter.csv"
    covid = args.manifests / "covid_cxr.csv"
    with open(covid, newline="", encoding="utf-8") as handle:
        reported = {(covid.parent / r["image_path"]).resolve() for r in csv.DictReader(handle)
                    if r["split"] == "dev"}
    covid_tuning_manifest(covid, out)
    with open(out, newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if Path(r["image_path"]) not in reported]
    for r in rows:
        r["split"] = "dev" if r["split"] == "tune" else r["split"]
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    splits = {s: sum(r["split"] == s for r in rows) for s in ("train", "dev")}
    print(f"{out}: train {splits['train']}, dev (tuning patients) {splits['dev']}")


if __name__ == "__main__":
    main()
