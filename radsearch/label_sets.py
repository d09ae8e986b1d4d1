"""Built-in label sets and prompt templates for zero-shot classification.

A *single-label* set (modality, body region, plane/view) is scored with a softmax over its labels.
A *findings* set (CheXpert observations) is scored CheXzero-style: each finding on its own, as the
softmax of "{finding}" against "no {finding}" prompts, giving an independent probability per finding.
Each label's text embedding is the mean of its prompt templates' embeddings (a prompt ensemble).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from radsearch.errors import RadsearchError

SINGLE = "single"
FINDINGS = "findings"

GENERIC_TEMPLATES = (
    "{label}",
    "a radiology image of {label}",
    "a medical image showing {label}",
)
FINDING_TEMPLATES = (
    "{label}",
    "there is {label}",
    "findings consistent with {label}",
)
NEGATIVE_TEMPLATES = (
    "no {label}",
    "there is no {label}",
    "no evidence of {label}",
)


@dataclass(frozen=True)
class LabelSet:
    name: str
    kind: str  # SINGLE or FINDINGS
    labels: tuple[str, ...]
    templates: tuple[str, ...] = GENERIC_TEMPLATES
    negative_templates: tuple[str, ...] = NEGATIVE_TEMPLATES
    # Words a prompt uses for a label, when they differ from the label shown to the user.
    prompt_words: dict[str, str] = field(default_factory=dict)

    def prompts(self, label: str, *, negative: bool = False) -> list[str]:
        words = self.prompt_words.get(label, label)
        templates = self.negative_templates if negative else self.templates
        return [template.format(label=words) for template in templates]


CHEXPERT = LabelSet(
    name="chexpert",
    kind=FINDINGS,
    labels=(
        "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
        "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
        "Pleural Other", "Fracture", "Support Devices",
    ),
    templates=FINDING_TEMPLATES,
    prompt_words={
        "No Finding": "a normal chest radiograph",
        "Enlarged Cardiomediastinum": "an enlarged cardiomediastinal silhouette",
        "Cardiomegaly": "cardiomegaly",
        "Lung Opacity": "a lung opacity",
        "Lung Lesion": "a lung lesion",
        "Edema": "pulmonary edema",
        "Consolidation": "consolidation",
        "Pneumonia": "pneumonia",
        "Atelectasis": "atelectasis",
        "Pneumothorax": "a pneumothorax",
        "Pleural Effusion": "a pleural effusion",
        "Pleural Other": "pleural thickening",
        "Fracture": "a fracture",
        "Support Devices": "support devices such as lines and tubes",
    },
)

MODALITY = LabelSet(
    name="modality",
    kind=SINGLE,
    labels=("CT", "MRI", "X-ray", "ultrasound", "PET", "mammography", "nuclear medicine",
            "fluoroscopy", "angiography"),
    templates=("a {label} image", "a {label} scan", "{label}"),
    prompt_words={
        "CT": "computed tomography (CT)",
        "MRI": "magnetic resonance (MRI)",
        "X-ray": "plain radiograph (X-ray)",
        "PET": "positron emission tomography (PET)",
        "nuclear medicine": "nuclear medicine scintigraphy",
    },
)

BODY_REGION = LabelSet(
    name="body-region",
    kind=SINGLE,
    labels=("head", "neck", "chest", "abdomen", "pelvis", "spine", "upper limb", "lower limb",
            "breast"),
    templates=("an image of the {label}", "a radiology image of the {label}", "{label}"),
    prompt_words={
        "head": "head and brain",
        "upper limb": "arm, shoulder or hand",
        "lower limb": "leg, knee or foot",
    },
)

PLANE = LabelSet(
    name="plane",
    kind=SINGLE,
    labels=("axial", "coronal", "sagittal", "PA", "AP", "lateral"),
    templates=("an {label} image", "a radiology image in the {label} plane", "{label}"),
    prompt_words={
        "axial": "axial (transverse)",
        "PA": "posteroanterior (PA) chest radiograph",
        "AP": "anteroposterior (AP) radiograph",
        "lateral": "lateral radiograph",
    },
)

LABEL_SETS = {label_set.name: label_set for label_set in (CHEXPERT, MODALITY, BODY_REGION, PLANE)}


def get_label_set(name: str) -> LabelSet:
    try:
        return LABEL_SETS[name]
    except KeyError:
        raise RadsearchError(
            f"unknown label set {name!r}; built in: {', '.join(sorted(LABEL_SETS))}"
        ) from None


def custom_label_set(labels: str | list[str], *, findings: bool = False) -> LabelSet:
    """A label set from the user's labels ("a, b, c" or a list)."""
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",")]
    labels = [label for label in labels if label]
    if not labels or (len(labels) < 2 and not findings):
        raise RadsearchError("give at least two labels (or one finding with --findings)")
    if len(set(labels)) != len(labels):
        raise RadsearchError("labels must be distinct")
    if findings:
        return LabelSet("custom", FINDINGS, tuple(labels), FINDING_TEMPLATES)
    return LabelSet("custom", SINGLE, tuple(labels))
