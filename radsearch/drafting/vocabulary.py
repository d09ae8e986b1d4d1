"""The findings the extractor knows and the phrases that mention them.

Two groups: the 14 CheXpert observations (their mention lists follow the CheXpert labeler's public
phrase lists, shortened to what a regular expression can say) and a general vocabulary for CT and
MR reports. A finding may overlap another ("effusion" counts for Pleural Effusion when nothing
says which effusion, and always for Effusion): each is judged on its own.

``mentions`` are regular expressions (case-insensitive, matched on word boundaries); ``excludes``
are phrases that contain a mention without meaning the finding ("pericardial effusion" is no
pleural effusion); ``negative_phrases`` state the finding's absence without a negation word
("heart size is normal").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NO_FINDING = "No Finding"


@dataclass(frozen=True)
class Finding:
    name: str
    mentions: tuple[str, ...]
    excludes: tuple[str, ...] = ()
    negative_phrases: tuple[str, ...] = ()
    chexpert: bool = False
    pattern: re.Pattern = field(init=False, repr=False, compare=False)
    exclude_pattern: re.Pattern | None = field(init=False, repr=False, compare=False)
    negative_pattern: re.Pattern | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def compile_(phrases: tuple[str, ...]) -> re.Pattern | None:
            if not phrases:
                return None
            return re.compile(r"\b(?:" + "|".join(phrases) + r")\b", re.IGNORECASE)

        object.__setattr__(self, "pattern", compile_(self.mentions))
        object.__setattr__(self, "exclude_pattern", compile_(self.excludes))
        object.__setattr__(self, "negative_pattern", compile_(self.negative_phrases))


_HEART = r"(?:heart|cardiac(?: silhouette| size| shadow| contour)?|cardiomediastinal silhouette)"
_SIZE_NORMAL = r"(?:(?:is|are|appears?|remains?|within)\s+)?(?:normal|within normal limits|unremarkable|stable|upper limits of normal|not enlarged)"

CHEXPERT = (
    Finding("Enlarged Cardiomediastinum", (
        r"(?:enlarged|widened|widening of the|prominent|enlargement of the) (?:cardio)?mediastin\w*",
        r"mediastin\w* (?:is |are )?(?:enlarged|widened|widening|enlargement|prominen\w+)",
        r"mediastinal (?:widening|enlargement|contour (?:is )?(?:enlarged|widened))",
    ), negative_phrases=(
        r"(?:normal|unremarkable) (?:cardio)?mediastin\w*(?: silhouette| contours?)?",
        r"(?:cardio)?mediastinal (?:silhouette|contours?) (?:and [\w ]{1,30} )?" + _SIZE_NORMAL,
        r"mediastinum (?:is )?(?:normal|unremarkable|within normal limits)",
    ), chexpert=True),
    Finding("Cardiomegaly", (
        r"cardiomegaly", r"enlarged (?:heart|cardiac (?:silhouette|shadow|size|contour))",
        r"enlarged cardiomediastinal silhouette",
        r"cardiac enlargement", r"enlargement of the (?:heart|cardiac silhouette)",
        r"(?:heart|cardiac silhouette|cardiac shadow|heart size|cardiac size) (?:is |are |appears |remains )?"
        r"(?:\w+ly )?(?:enlarged|large|increased|prominent)",
    ), negative_phrases=(
        _HEART + r"(?: size)? (?:and [\w ]{1,40} )?" + _SIZE_NORMAL,
        r"normal (?:heart|cardiac) size", r"normal(?:-sized)? heart", r"normal cardiac silhouette",
        r"(?:heart|cardiac silhouette)(?: size)? (?:is |are )?not enlarged",
        r"heart size normal", r"normal cardiomediastinal (?:silhouette|contours?)",
    ), chexpert=True),
    Finding("Lung Lesion", (
        r"(?:pulmonary |lung )?nodul\w*", r"(?:pulmonary |lung )?mass(?:es)?", r"lesions?",
        r"neoplasm\w*", r"tumou?rs?", r"carcinoma", r"cavitary (?:lesion|mass)", r"cyst(?:s|ic lesion)?",
        r"metastas[ie]s", r"malignan\w+",
    ), excludes=(r"mass effect", r"body mass", r"bone lesions?", r"osseous lesions?", r"lytic lesions?",
                 r"blastic lesions?", r"sclerotic lesions?"), chexpert=True),
    Finding("Lung Opacity", (
        r"opaci\w+", r"infiltrat\w*", r"air ?-?space (?:disease|opacit\w+|consolidation)",
        r"(?:increased |hazy |patchy |focal |bibasilar |basilar |streaky )(?:density|densities)",
        r"(?:reticular|interstitial|ground[- ]glass) (?:opacit\w+|markings?|pattern|changes?)",
        r"ground[- ]glass", r"scarring", r"fibrosis", r"airspace disease",
    ), negative_phrases=(r"lungs? (?:are |is |appear |remain )?(?:clear|well expanded and clear)",
                         r"clear lungs?"), chexpert=True),
    Finding("Edema", (
        r"(?:pulmonary |interstitial |alveolar )?edema", r"(?:pulmonary |vascular )congestion",
        r"congestive heart failure", r"\bchf", r"heart failure", r"vascular (?:prominence|redistribution)",
        r"cephalization",
    ), excludes=(r"soft tissue edema", r"(?:cerebral|bone marrow|marrow|vasogenic|cytotoxic|scrotal|"
                 r"subcutaneous|perilesional|periportal|mucosal|brain|spinal cord|cord) edema",),
        negative_phrases=(r"pulmonary vascularity (?:is |are |appears? )?(?:normal|within normal limits)",),
        chexpert=True),
    Finding("Consolidation", (r"consolidat\w+",), chexpert=True),
    Finding("Pneumonia", (r"pneumonias?", r"pneumonitis", r"infectio\w+", r"infectious process"),
            chexpert=True),
    Finding("Atelectasis", (r"atelecta\w+", r"collapse", r"volume loss"),
            excludes=(r"vertebral (?:body )?collapse",), chexpert=True),
    Finding("Pneumothorax", (r"pneumothora(?:x|ces)", r"pleural air(?: collections?)?"), chexpert=True),
    Finding("Pleural Effusion", (r"(?:pleural )?effusions?", r"hydrothora(?:x|ces)",
                                 r"fluid in the (?:pleural space|costophrenic)"),
            excludes=(r"(?:pericardial|joint|knee|hip|shoulder|subdural|mastoid|middle ear|sinus|"
                      r"peritoneal|elbow|ankle) effusions?",), chexpert=True),
    Finding("Pleural Other", (r"pleural (?:thickening|plaques?|scarring|calcification|fibrosis)",
                              r"fibrothorax", r"pleural[- ]parenchymal scarring"), chexpert=True),
    Finding("Fracture", (r"fractur\w+", r"\bfx"), chexpert=True),
    Finding("Support Devices", (
        r"(?:endotracheal|enteric|nasogastric|feeding|chest|tracheostomy|ng|et|og|dobhoff) tubes?",
        r"(?:central (?:venous )?|picc |swan[- ]ganz |venous |dialysis )(?:line|catheter)s?",
        r"picc", r"catheters?", r"pacemaker", r"pacer", r"defibrillator", r"\baicd", r"icd",
        r"(?:cardiac )?(?:pacing|monitoring) (?:device|leads?)", r"pacing leads?", r"port-a-cath",
        r"stents?", r"sternotomy wires?", r"(?:surgical |vascular )?clips", r"drains?",
        r"(?:medical |implanted )?devices?", r"hardware", r"prosthe\w+", r"valve replacement",
        r"tubes?",
    ), chexpert=True),
)

GENERAL = (
    Finding("Mass", (r"mass(?:es)?", r"tumou?rs?", r"neoplasm\w*"), excludes=(r"mass effect", r"body mass")),
    Finding("Nodule", (r"nodul\w*",)),
    Finding("Hemorrhage", (r"ha?emorrhag\w*", r"bleed(?:ing)?", r"ha?ematomas?", r"blood products")),
    Finding("Effusion", (r"effusions?",)),
    Finding("Infarct", (r"infarct\w*", r"ischemic stroke", r"acute stroke")),
    Finding("Calcification", (r"calcifi\w+", r"calcinosis", r"calcified granulomas?")),
    Finding("Granuloma", (r"granulomas?", r"granulomatous")),
    Finding("Emphysema", (r"emphysema\w*", r"copd", r"chronic obstructive"),
            excludes=(r"subcutaneous emphysema",)),
    Finding("Hernia", (r"hernia\w*",)),
    Finding("Scoliosis", (r"\w*scolio\w+", r"(?:dextro|levo)?curvature", r"\w*convex\w*")),
    Finding("Atherosclerosis", (r"atherosclero\w+", r"atheroma\w*", r"(?:aortic|vascular|arterial) "
                                r"(?:atherosclerotic )?calcifications?")),
    Finding("Degenerative Change", (r"degenerat\w+", r"spondylo\w+", r"osteophyt\w+", r"arthritis",
                                     r"arthropath\w+")),
    Finding("Cyst", (r"cysts?", r"cystic")),
    Finding("Abscess", (r"abscess\w*",)),
    Finding("Metastasis", (r"metasta\w+",)),
    Finding("Lymphadenopathy", (r"lymphadenopath\w+", r"(?:enlarged|prominent) (?:lymph )?nodes?",
                                 r"adenopathy")),
    Finding("Aneurysm", (r"aneurysm\w*",)),
    Finding("Hydrocephalus", (r"hydrocephal\w+", r"ventriculomegaly")),
    Finding("Ascites", (r"ascites",)),
    Finding("Thrombosis", (r"thromb\w+", r"embol\w+", r"clot")),
    Finding("Stenosis", (r"stenos[ie]s", r"stenotic", r"narrowing")),
    Finding("Dilation", (r"dilat\w+", r"distend\w+", r"distension", r"ectasia")),
    Finding("Enhancement", (r"enhanc\w+",)),
    Finding("Herniation", (r"(?:disc|disk) (?:herniation|protrusion|extrusion|bulge)",
                           r"herniated (?:disc|disk|nucleus)")),
    Finding("Midline Shift", (r"midline shift", r"shift of the midline")),
)

FINDINGS: tuple[Finding, ...] = CHEXPERT + GENERAL
CHEXPERT_NAMES = tuple(f.name for f in CHEXPERT) + (NO_FINDING,)
