"""Metadata fields hold their field's vocabulary, never a value someone typed into the wrong field.

Modality, body part and view (with laterality) are coded fields: a value is stored only when every
word of it is a word of the field's vocabulary (the DICOM defined terms and the spellings people
use for them: "Abdomen and pelvis", "AP supine", "L PA", "MRI"); anything else - a name, an ID,
a date typed into Body Part Examined - is dropped. Manufacturer and the descriptions are free text
with no closed vocabulary: they are cleaned by the identifier rules (``deid``) instead. The file's
own identifiers were already removed by ``phi.Scrubber`` where the file has a header.
"""

from __future__ import annotations

import re

from radsearch.reading.deid import deidentify

_MODALITY_WORDS = frozenset(
    # PS3.3 C.7.3.1.1.1 defined terms, current and retired
    """AR ASMT AU BDUS BI BMD CR CT CTPROTOCOL DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS
    KER KO LEN LS MG MR M3D NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN PR PT PX REG RESP
    RF RG RTDOSE RTIMAGE RTPLAN RTRECORD RTSTRUCT RWV SEG SM SMR SR SRF STAIN TEXTUREMAP TG US VA
    XA XC DS DF CF CS EC FA CD DD DM LP MA MS OPR ST VF"""
    # and the words of their common spellings
    """ MRI NMR MAGNETIC RESONANCE IMAGING CAT SCAN COMPUTED TOMOGRAPHY CTA ANGIOGRAPHY ANGIOGRAM
    XRAY X RAY XR RADIOGRAPH RADIOGRAPHY PLAIN FILM FILMS DIGITAL ULTRASOUND ULTRASONOGRAPHY
    SONOGRAPHY ECHO ECHOCARDIOGRAPHY DOPPLER MAMMOGRAPHY MAMMOGRAM PET POSITRON EMISSION NUCLEAR
    MEDICINE SCINTIGRAPHY SPECT DSA FLUOROSCOPY FLUORO AND""".split()
)
_VIEW_WORDS = frozenset(
    # View Position (PS3.3 C.8.11.5.1.1, mammography CID 4014) and the planes of sections
    """AP PA LL RL RLD LLD RLO LLO CC MLO ML LM LMO SIO FB XCC XCCL XCCM ID RCC LCC RMLO LMLO
    AXIAL CORONAL SAGITTAL OBLIQUE LATERAL FRONTAL TRANSVERSE TRANSAXIAL TRA TRANS AX AXI COR CORO
    SAG SAGIT OBL LAT ANTEROPOSTERIOR POSTEROANTERIOR DECUBITUS DECUB SUPINE PRONE ERECT UPRIGHT
    SEMI PORTABLE STANDING SITTING INSPIRATION EXPIRATION LORDOTIC APICAL TOWNE WATERS CALDWELL
    SWIMMER SWIMMERS"""
    # Laterality: right, left, both, unpaired
    """ R L B U RIGHT LEFT BOTH BILATERAL"""
    # and the words of views as teaching files and manifests describe them
    """ 3D RECONSTRUCTION RECON MIP MPR VR VOLUME RENDERED RENDERING SCOUT LOCALIZER TOPOGRAM
    MULTIPLE MONTAGE OR AND NOS NOT SPECIFIED UNKNOWN OTHER VIEW VIEWS SEE CAPTION PLANE PLANES
    ABOVE BELOW MID DRAWING GROSS PATHOLOGY PHOTOGRAPH""".split()
)
_BODY_PART_WORDS = frozenset(
    # Body Part Examined defined terms (PS3.16 Annex L) and the words of their common spellings
    """ABDOMEN ABDOMENPELVIS ADRENAL ANKLE AORTA ARM AXILLA BACK BLADDER BRAIN BREAST BRONCHUS
    BUTTOCK CALCANEUS CALF CAROTID CEREBELLUM CERVIX CHEEK CHEST CHESTABDOMEN CHESTABDPELVIS
    CIRCLEOFWILLIS CLAVICLE COCCYX COLON CORNEA CORONARYARTERY CSPINE CTSPINE DUODENUM EAR
    ELBOW ESOPHAGUS EXTREMITY EYE EYELID FACE FEMUR FINGER FOOT FOREARM GALLBLADDER HAND HEAD
    HEADNECK HEART HIP HUMERUS IAC ILEUM ILIUM JAW JEJUNUM KIDNEY KNEE LARYNX LEG LIVER LSPINE
    LSSPINE LUNG MAXILLA MEDIASTINUM MOUTH NECK NECKCHEST NECKCHESTABDOMEN NECKCHESTABDPELV NOSE
    ORBIT OVARY PANCREAS PAROTID PATELLA PELVIS PENIS PHARYNX PROSTATE RECTUM RIB SACRUM SCAPULA
    SCLERA SCROTUM SHOULDER SKULL SPINE SPLEEN STERNUM STOMACH SUBMANDIBULAR TESTIS THIGH THUMB
    THYMUS THYROID TIBIA TLSPINE TOE TONGUE TRACHEA TSPINE URETER URETHRA UTERUS VAGINA VULVA
    WHOLEBODY WRIST ZYGOMA SSPINE TMJ SINUS SINUSES SELLA PITUITARY IACS ORBITS HEADNECK
    THORAX LUNGS PULMONARY ABD ABDOMINAL PELVIC CERVICAL THORACIC DORSAL LUMBAR SACRAL WHOLE
    BODY TOTAL EXTREMITIES LIMB LIMBS BREASTS MAMMARY CARDIAC KNEES HANDS FEET HIPS SHOULDERS
    ELBOWS WRISTS ANKLES RIBS NEURO SKULLBASE FACIAL BONES BONE SOFT TISSUE VESSELS VASCULAR
    UPPER LOWER ARTERY VEIN VENOUS ARTERIAL RENAL KIDNEYS HEPATIC BILIARY BOWEL GI GU ENT
    CHESTABDOMENPELVIS ABDPELVIS NECKCHESTABDOMENPELVIS CAP C T L S SPINAL"""
    """ AND TO WITH W OF LEFT RIGHT BILATERAL""".split()
)
VOCABULARIES: dict[str, frozenset[str]] = {
    "modality": _MODALITY_WORDS,
    "body_part": _BODY_PART_WORDS,
    "view": _VIEW_WORDS | _BODY_PART_WORDS,  # "Mid abdomen"
}
FREE_TEXT_FIELDS = ("manufacturer", "study_description", "series_description")


def known_value(field: str, value: object) -> str | None:
    """``value`` when every word of it belongs to ``field``'s vocabulary, else None."""
    if value is None:
        return None
    text = str(value).strip()
    words = [word for word in re.split(r"[\s,_/\\\-&+().]+", text.upper()) if word]
    if not words or any(word not in VOCABULARIES[field] for word in words):
        return None
    return text


def safe_field_values(metadata: dict) -> dict:
    """``metadata`` with its coded fields kept only when they are of their vocabulary and its free
    text fields cleaned of identifiers. Applied to every metadata dict before it is stored."""
    safe = dict(metadata)
    for field in VOCABULARIES:
        if field in safe:
            safe[field] = known_value(field, safe[field])
    for field in FREE_TEXT_FIELDS:
        if isinstance(safe.get(field), str):
            safe[field] = deidentify(safe[field])
    return safe
