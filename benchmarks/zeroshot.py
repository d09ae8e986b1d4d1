"""Zero-shot classification on real data, per model, against chance.

    python benchmarks/zeroshot.py [--model radclip-mini --model radclip-mini-untrained] [--json out.json]

Tasks (built from ../shared/data into a temporary folder; nothing here trains or tunes on them):
- medpix2 test split (held out): modality (CT vs MRI), plane (axial, coronal, sagittal), body region
  (head, chest, abdomen, spine);
- covid_cxr dev patients (held out from training) X-rays: view (PA, AP, lateral), finding (COVID-19
  vs other pneumonia vs no finding);
- vqa_rad: body region (chest, abdomen, head) and the closed yes/no questions about a finding that
  maps onto a label ("Is there a pleural effusion?"), one binary task per finding with enough
  questions. The shipped radclip-mini was trained on vqa_rad images with their question/answer text,
  so for it these rows are IN-SAMPLE (marked so): they test the classifier, not generalisation.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from radsearch.encoders import DEFAULT_MODEL  # noqa: E402
from radsearch.training.build_manifests import covid_patient_split  # noqa: E402
from radsearch.training.zeroshot_eval import evaluate_zeroshot  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Finding words in a VQA-RAD question -> the label the model is asked about.
VQA_FINDINGS = {
    r"pleural effusion|effusion": "pleural effusion",
    r"pneumothorax": "pneumothorax",
    r"cardiomegaly|heart (?:is )?enlarged|enlarged heart|cardiac silhouette (?:is )?enlarged": "cardiomegaly",
    r"fracture": "fracture",
    r"mass\b|masses": "a mass",
    r"hemorrhage|bleed": "hemorrhage",
    r"edema": "edema",
    r"pneumoperitoneum|free air": "free air under the diaphragm",
    r"infarct": "infarction",
    r"calcification|calcified": "calcification",
    r"lesion": "a lesion",
    r"atelectasis": "atelectasis",
    r"consolidation": "consolidation",
    r"dilated|dilation|dilatation": "dilation",
}
MIN_BINARY = 8


def _write(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _read(name: str) -> list[dict]:
    with open(DATA / name, newline="") as handle:
        return list(csv.DictReader(handle))


def build_tasks(folder: Path) -> list[dict]:
    """[{name, manifest, column, labels|finding, label_set, split}]"""
    tasks = []
    medpix = [r for r in _read("medpix2/manifest.csv") if r["split"] == "test"]
    rows = [{"image": str(DATA / "medpix2" / r["image_path"]), "modality": r["modality"]} for r in medpix]
    tasks.append({"name": "medpix2 test: modality (CT vs MRI)", "manifest": _write(folder / "m.csv", rows),
                  "column": "modality", "labels": ["CT", "MRI"], "label_set": "modality"})
    rows = [{"image": str(DATA / "medpix2" / r["image_path"]), "plane": r["view"].lower()}
            for r in medpix if r["view"] in ("Axial", "Coronal", "Sagittal")]
    tasks.append({"name": "medpix2 test: plane", "manifest": _write(folder / "p.csv", rows),
                  "column": "plane", "labels": ["axial", "coronal", "sagittal"], "label_set": "plane"})
    location = {"Head": "head", "Thorax": "chest", "Abdomen": "abdomen", "Spine and Muscles": "spine"}
    rows = [{"image": str(DATA / "medpix2" / r["image_path"]), "region": location[r["location_category"]]}
            for r in medpix if r["location_category"] in location]
    tasks.append({"name": "medpix2 test: body region", "manifest": _write(folder / "b.csv", rows),
                  "column": "region", "labels": ["head", "chest", "abdomen", "spine"],
                  "label_set": "body-region"})
    region = {"CHEST": "chest", "ABD": "abdomen", "HEAD": "head"}
    rows = [{"image": str(DATA / "vqa_rad" / r["image_path"]), "region": region[r["label"]]}
            for r in _read("vqa_rad/manifest_per_image.csv")]
    tasks.append({"name": "vqa_rad: body region (in-sample)", "manifest": _write(folder / "r.csv", rows),
                  "column": "region", "labels": ["chest", "abdomen", "head"], "label_set": "body-region"})
    covid = [r for r in _read("covid_cxr/manifest.csv")
             if r["modality"] == "X-ray" and covid_patient_split(r["patientid"]) == "dev"]
    view = {"PA": "PA", "AP": "AP", "AP Supine": "AP", "L": "lateral"}
    rows = [{"image": str(DATA / "covid_cxr" / r["image_path"]), "view": view[r["view"]]}
            for r in covid if r["view"] in view]
    tasks.append({"name": "covid_cxr dev X-ray: view", "manifest": _write(folder / "v.csv", rows),
                  "column": "view", "labels": ["PA", "AP", "lateral"], "label_set": "plane"})
    finding = {"COVID-19": "COVID-19 pneumonia", "No Finding": "no finding"}
    rows = [{"image": str(DATA / "covid_cxr" / r["image_path"]),
             "finding": finding.get(r["label"], "other pneumonia")}
            for r in covid if r["label"] not in ("todo", "")]
    tasks.append({"name": "covid_cxr dev X-ray: finding", "manifest": _write(folder / "f.csv", rows),
                  "column": "finding", "labels": ["COVID-19 pneumonia", "other pneumonia", "no finding"]})
    by_finding: dict[str, dict[str, str]] = {}
    for row in _read("vqa_rad/manifest.csv"):
        answer = row["answer"].strip().lower()
        if row["answer_type"] != "CLOSED" or answer not in ("yes", "no"):
            continue
        question = row["question"].lower()
        for pattern, label in VQA_FINDINGS.items():
            if re.search(pattern, question):
                # one answer per image and finding; conflicting answers drop the pair
                answers = by_finding.setdefault(label, {})
                image = str(DATA / "vqa_rad" / row["image_path"])
                answers[image] = answer if answers.get(image, answer) == answer else "conflict"
                break
    for label, answers in sorted(by_finding.items()):
        rows = [{"image": image, "answer": a} for image, a in answers.items() if a != "conflict"]
        if len(rows) >= MIN_BINARY and {"yes", "no"} <= {r["answer"] for r in rows}:
            name = re.sub(r"\W+", "_", label)
            tasks.append({"name": f"VQA-RAD yes/no (in-sample): {label}", "manifest": _write(folder / f"q_{name}.csv", rows),
                          "column": "answer", "finding": label})
    return tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="repeatable [default: radclip-mini]")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = args.model or [DEFAULT_MODEL]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in build_tasks(Path(tmp)):
            row = {"task": task["name"]}
            for model in models:
                metrics = evaluate_zeroshot(
                    task["manifest"], task["column"], labels=task.get("labels"),
                    label_set=task.get("label_set"), finding=task.get("finding"), model=model,
                )
                row["n"] = metrics["n"]
                row["chance_accuracy"] = metrics["chance_accuracy"]
                row[model] = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_auc")}
            results.append(row)
            print(json.dumps(row), flush=True)
    header = "| task | n | chance acc. | " + " | ".join(
        f"{m} acc. / bal. acc. / AUC" for m in models) + " |"
    print("\n" + header + "\n|" + "---|" * (3 + len(models)))
    for row in results:
        cells = [
            " / ".join("-" if row[m][k] is None else f"{row[m][k]:.2f}"
                       for k in ("accuracy", "balanced_accuracy", "macro_auc"))
            for m in models
        ]
        print(f"| {row['task']} | {row['n']} | {row['chance_accuracy']:.2f} | " + " | ".join(cells) + " |")
    print("\nbalanced accuracy chance = 1/classes (0.50 for binary tasks); AUC chance = 0.50")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
