"""Precision and recall of the finding extractor against the MeSH terms of the IU X-ray reports.

    python benchmarks/finding_extractor_iu.py [--reports ../shared/data/iu_xray_reports/NLMCXR_reports.tgz]

Each of the 3,955 Open-i reports lists MeSH terms ("major") for what it reports as present, e.g.
``Pleural Effusion/left/small`` or ``Cardiac Shadow/enlarged``. A finding is true for a report when
one of its terms maps to it (``MESH`` below); the extractor runs on FINDINGS + IMPRESSION and a
finding is predicted when its status is positive. Reports without findings or impression text and
those indexed ``No Indexing`` are left out. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import re
import tarfile
from pathlib import Path

from radsearch.drafting.findings import extract_findings

DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "iu_xray_reports" / "NLMCXR_reports.tgz"

# finding -> MeSH heads (lower case), or (head, qualifier) pairs that need that qualifier too.
MESH: dict[str, tuple] = {
    "No Finding": ("normal",),
    "Cardiomegaly": ("cardiomegaly", ("cardiac shadow", "enlarged"), ("heart", "enlarged")),
    "Enlarged Cardiomediastinum": (("mediastinum", "enlarged"), ("mediastinum", "widened"),
                                   ("mediastinum", "prominent")),
    "Pleural Effusion": ("pleural effusion",),
    "Pleural Other": (("thickening", "pleura"),),
    "Pneumothorax": ("pneumothorax",),
    "Atelectasis": ("pulmonary atelectasis",),
    "Edema": ("pulmonary edema", "pulmonary congestion"),
    "Pneumonia": ("pneumonia",),
    "Consolidation": ("consolidation",),
    "Lung Opacity": ("opacity", "airspace disease", "infiltrate", ("density", "lung"), "cicatrix",
                     "pulmonary fibrosis"),
    "Lung Lesion": ("nodule", "mass", "lung neoplasms", "neoplasms", "cysts"),
    "Fracture": ("fractures, bone",),
    "Support Devices": ("catheters, indwelling", "implanted medical device", "surgical instruments",
                        "tube, inserted", "medical device", "stents", "pacemaker, artificial"),
    "Nodule": ("nodule",),
    "Mass": ("mass",),
    "Calcification": ("calcinosis", "calcified granuloma"),
    "Granuloma": ("granuloma", "calcified granuloma", "granulomatous disease"),
    "Emphysema": ("emphysema", "pulmonary emphysema", "pulmonary disease, chronic obstructive"),
    "Hernia": ("hernia, hiatal", "hernia"),
    "Scoliosis": ("scoliosis",),
    "Atherosclerosis": ("atherosclerosis",),
    "Degenerative Change": ("osteophyte", "spondylosis", "arthritis", ("thoracic vertebrae", "degenerative"),
                            ("spine", "degenerative")),
    "Effusion": ("pleural effusion", "pericardial effusion"),
}


def read_reports(archive: Path) -> list[tuple[str, list[str]]]:
    """(FINDINGS + IMPRESSION text, major MeSH terms) of every report in the Open-i archive."""
    out = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if not member.name.endswith(".xml"):
                continue
            xml = tar.extractfile(member).read().decode("utf-8")
            parts = re.findall(r'Label="(FINDINGS|IMPRESSION)"[^>]*>(.*?)</AbstractText>', xml, re.S)
            text = "\n".join(f"{label}: {body.strip()}" for label, body in parts if body.strip())
            out.append((text, re.findall(r"<major>(.*?)</major>", xml)))
    return out


def true_findings(terms: list[str]) -> set[str]:
    found = set()
    for term in terms:
        head, *qualifiers = [p.strip().lower() for p in term.split("/")]
        for finding, keys in MESH.items():
            for key in keys:
                if key == head or (isinstance(key, tuple) and key[0] == head and key[1] in qualifiers):
                    found.add(finding)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=DEFAULT)
    args = parser.parse_args()
    reports = [(text, terms) for text, terms in read_reports(args.reports)
               if text and not any(t.lower() == "no indexing" for t in terms)]
    counts = {name: [0, 0, 0] for name in MESH}  # true positives, predicted, true
    for text, terms in reports:
        truth = true_findings(terms)
        predicted = {n for n, s in extract_findings(text).items() if s == "positive"}
        for name, c in counts.items():
            c[0] += name in truth and name in predicted
            c[1] += name in predicted
            c[2] += name in truth
    print(f"{len(reports)} IU X-ray reports (FINDINGS + IMPRESSION) against their MeSH terms\n")
    print("| finding | reports with it (MeSH) | predicted | precision | recall | F1 |")
    print("|---|---|---|---|---|---|")
    totals = [0, 0, 0]
    for name, (tp, predicted, true) in sorted(counts.items(), key=lambda kv: -kv[1][2]):
        p = tp / predicted if predicted else 0.0
        r = tp / true if true else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        totals = [a + b for a, b in zip(totals, (tp, predicted, true))]
        print(f"| {name} | {true} | {predicted} | {p:.3f} | {r:.3f} | {f:.3f} |")
    tp, predicted, true = totals
    p, r = tp / predicted, tp / true
    print(f"| **micro** | {true} | {predicted} | {p:.3f} | {r:.3f} | {2 * p * r / (p + r):.3f} |")


if __name__ == "__main__":
    main()
