"""Scores of drafts against reference reports: NLG metrics and finding F1.

Every text is first reduced to its sentences (``text.report_body``) and normalised
(``text.normalise``) — the same for every drafter — then scored by pycocoevalcap: BLEU-1..4
(corpus-level, as in the COCO caption evaluation, not a mean of per-report BLEU), METEOR 1.5 (needs
Java; reported as unavailable, with the reason, without it), ROUGE-L and CIDEr-D (document
frequencies from the references scored). ``finding_F1`` compares the findings the extractor reads
as positive in the draft and in the reference: micro over every (report, finding) pair, macro as the
mean F1 of the findings positive in at least one reference. ``No Finding`` is left out: it is the
absence of the 14 chest observations, which in a CT or MR report says nothing about the study.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from radsearch.drafting.findings import positive_findings
from radsearch.drafting.text import normalise, report_body
from radsearch.drafting.vocabulary import NO_FINDING
from radsearch.optional import require

METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def _scorers():
    require("metrics")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    return Bleu, Cider, Rouge


def meteor_unavailable() -> str | None:
    """Why METEOR cannot be computed here, or None when it can."""
    if shutil.which("java") is None:
        return "METEOR needs Java (a `java` command on PATH), which is not installed"
    return None


def nlg_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr of drafts against references (one reference each)."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError("need as many drafts as references, at least one")
    Bleu, Cider, Rouge = _scorers()
    res = {i: [normalise(report_body(h))] for i, h in enumerate(hypotheses)}
    gts = {i: [normalise(report_body(r))] for i, r in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)}
    reason = meteor_unavailable()
    if reason is None:
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            out["METEOR"] = float(scorer.compute_score(gts, res)[0])
        except (OSError, ValueError) as error:  # the Java process died or answered nothing
            reason = f"METEOR's Java process failed ({type(error).__name__}: {error})"
        finally:
            # The scorer leaves its Java process running until garbage collection: stop it now.
            scorer.meteor_p.stdin.close()
            scorer.meteor_p.kill()
            scorer.meteor_p.wait()
    if reason is not None:
        out["METEOR"] = None
        out["METEOR_unavailable"] = reason
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return out


def finding_f1(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """``{"micro", "macro", "per_finding": {name: F1}}`` over positive findings."""
    counts: dict[str, list[int]] = {}  # finding -> [true positives, predicted, true]
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        predicted = positive_findings(hypothesis) - {NO_FINDING}
        true = positive_findings(reference) - {NO_FINDING}
        for name in predicted | true:
            c = counts.setdefault(name, [0, 0, 0])
            c[0] += name in predicted and name in true
            c[1] += name in predicted
            c[2] += name in true

    def f1(tp: int, predicted: int, true: int) -> float:
        return 2 * tp / (predicted + true) if predicted + true else 0.0

    per = {name: f1(*c) for name, c in sorted(counts.items()) if c[2]}
    totals = [sum(c[i] for c in counts.values()) for i in range(3)]
    return {"micro": f1(*totals), "macro": sum(per.values()) / len(per) if per else 0.0,
            "per_finding": per}
