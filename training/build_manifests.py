"""Training manifests for radclip-mini built from the project's shared data (``../shared/data``).

Follows that folder's rules for honest numbers:
- ``medpix2``: its own case-level split (train / dev / test); test is for reporting only. Training
  rows whose caption is flagged ``weak_caption`` (placeholders such as "IN PROGRESS", "CT Image",
  questions) are left out of train; dev and test keep every row so that they stay the published split.
- ``vqa_rad``: one row an image, text built from the clinicians' question/answer pairs; images that
  are also in medpix2's dev or test split are left out; everything else is train.
- ``covid_cxr``: split by patient, about a fifth of the patients in dev (a stable hash of the patient
  id, so the split never changes); text = modality, view, finding label and the clinical note.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

COVID_DEV_PERCENT = 20
_ORGANS = {"CHEST": "chest", "ABD": "abdomen", "HEAD": "head"}
_VIEWS = {"PA": "PA view", "AP": "AP view", "AP Supine": "AP supine view", "L": "lateral view",
          "Axial": "axial", "Coronal": "coronal"}
FIELDS = ("image_path", "text", "split", "group", "case_texts")


def build_manifests(data_root: Path, out_dir: Path) -> dict[str, Path]:
    """Write ``medpix2.csv``, ``vqa_rad.csv`` and ``covid_cxr.csv`` into ``out_dir``; their paths."""
    data_root, out_dir = Path(data_root).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    builders = {"medpix2": _medpix2, "vqa_rad": _vqa_rad, "covid_cxr": _covid_cxr}
    written = {}
    for name, build in builders.items():
        source = data_root / name
        rows = [
            {**row, "image_path": os.path.relpath(source / row["image_path"], out_dir.resolve())}
            for row in build(source)
        ]
        written[name] = _write(out_dir / f"{name}.csv", rows)
    return written


def _read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _write(path: Path, rows: Iterable[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _medpix2(source: Path) -> list[dict]:
    return [
        {"image_path": r["image_path"], "text": r["text"], "split": r["split"], "group": r["case_id"],
         "case_texts": _case_texts(r) if r["split"] == "train" else ""}
        for r in _read(source / "manifest.csv")
        if not (r["split"] == "train" and r["weak_caption"] == "True")
    ]


def _case_texts(row: dict) -> str:
    """The case's findings, diagnosis and history, one a line, each led by the image's modality and
    plane (the case texts speak of the case, not of this image)."""
    lead = " ".join(v for v in (row["modality"], row["view"]) if v and v.lower() != "nan")
    texts = [row["case_findings"], row["case_title"].rstrip(".") + "." if row["case_title"] else "",
             row["case_history"]]
    return "\n".join(f"{lead}: {' '.join(t.split())}" if lead else " ".join(t.split())
                     for t in texts if t and t.strip() and t.strip().lower() != "nan")


def _vqa_rad(source: Path) -> list[dict]:
    images = {r["image_path"]: r for r in _read(source / "manifest_per_image.csv")}
    qa = defaultdict(list)
    for r in _read(source / "manifest.csv"):
        qa[r["image_path"]].append((r["question"].strip(), r["answer"].strip()))
    rows = []
    for image_path, r in images.items():
        if r["medpix_split"] in ("dev", "test"):
            continue
        organ = _ORGANS.get(r["label"], r["label"].lower())
        lines = [f"{r['modality']} of the {organ}."]
        lines += [f"{q.rstrip('?')}? {a.rstrip('.')}." for q, a in dict.fromkeys(qa[image_path])]
        group = r["medpix_case_url"] or image_path
        rows.append({"image_path": image_path, "text": " ".join(lines), "split": "train",
                     "group": group})
    return rows


def _covid_cxr(source: Path) -> list[dict]:
    rows = []
    for r in _read(source / "manifest.csv"):
        view = _VIEWS.get(r["view"].strip())
        modality = "Chest X-ray" if r["modality"] == "X-ray" else f"Chest {r['modality']}"
        head = f"{modality}, {view}." if view else f"{modality}."
        finding = "" if r["label"] in ("", "todo") else f" Finding: {r['label']}."
        text = f"{head}{finding} {r['text'].strip()}".strip()
        rows.append({"image_path": r["image_path"], "text": text,
                     "split": covid_patient_split(r["patientid"]), "group": f"patient-{r['patientid']}"})
    return rows


def covid_patient_split(patient_id: str) -> str:
    """covid_cxr patients: about a fifth in dev, by a stable hash of the patient id."""
    bucket = int(hashlib.sha256(f"covid_cxr/{patient_id}".encode()).hexdigest(), 16) % 100
    return "dev" if bucket < COVID_DEV_PERCENT else "train"
