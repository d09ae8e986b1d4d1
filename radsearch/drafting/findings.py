"""Rule-based, negation-aware finding extraction from report text.

Each finding of ``vocabulary.FINDINGS`` mentioned in a report is positive, negative or uncertain.
In a sentence, every mention is judged by its negation and uncertainty scopes
(``negation.SentenceScopes``); over a report the statuses combine as in the CheXpert labeler:
positive if any mention is positive, else uncertain if any is, else negative. ``No Finding`` is
positive when no CheXpert observation other than Support Devices is positive or uncertain.
"""

from __future__ import annotations

from collections.abc import Iterable

from radsearch.drafting.negation import SentenceScopes, Status
from radsearch.drafting.vocabulary import CHEXPERT, FINDINGS, NO_FINDING, Finding
from radsearch.reports import report_sentences

_PRIORITY: dict[Status, int] = {"positive": 2, "uncertain": 1, "negative": 0}
_NOT_ABNORMAL = {"Support Devices"}


def _combine(statuses: dict[str, Status], name: str, status: Status) -> None:
    old = statuses.get(name)
    if old is None or _PRIORITY[status] > _PRIORITY[old]:
        statuses[name] = status


def _excluded_spans(finding: Finding, sentence: str) -> list[tuple[int, int]]:
    if finding.exclude_pattern is None:
        return []
    return [m.span() for m in finding.exclude_pattern.finditer(sentence)]


def sentence_findings(sentence: str, findings: Iterable[Finding] = FINDINGS) -> dict[str, Status]:
    """The findings one sentence mentions, each with its status in that sentence."""
    scopes: SentenceScopes | None = None
    statuses: dict[str, Status] = {}
    for finding in findings:
        excluded = _excluded_spans(finding, sentence)
        if finding.negative_pattern is not None and finding.negative_pattern.search(sentence):
            _combine(statuses, finding.name, "negative")
        for match in finding.pattern.finditer(sentence):
            if any(a <= match.start() and match.end() <= b for a, b in excluded):
                continue
            scopes = scopes or SentenceScopes(sentence)
            _combine(statuses, finding.name, scopes.status(*match.span()))
    return statuses


def extract_findings(text: str) -> dict[str, Status]:
    """Every finding the report mentions, with its status over the whole report (+ No Finding)."""
    statuses: dict[str, Status] = {}
    for sentence in report_sentences(text):
        for name, status in sentence_findings(sentence.text).items():
            _combine(statuses, name, status)
    abnormal = [c.name for c in CHEXPERT if c.name not in _NOT_ABNORMAL
                and statuses.get(c.name) in ("positive", "uncertain")]
    statuses[NO_FINDING] = "negative" if abnormal else "positive"
    return statuses


def positive_findings(text: str) -> set[str]:
    """The findings a report states as present (what finding F1 compares)."""
    return {name for name, status in extract_findings(text).items() if status == "positive"}
