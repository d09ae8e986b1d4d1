"""Negation and uncertainty scopes in one sentence, NegEx/ConText style.

A trigger phrase ("no", "without", "possible", "cannot be excluded") opens a scope forwards
(``pre``) or backwards (``post``); the scope ends at a terminator ("but", "however", ";"), at the
sentence's end, or after ``MAX_SCOPE_WORDS`` words. Pseudo-triggers ("no change", "not only") look
like triggers but open no scope, so they are masked first. A mention inside an uncertainty scope is
uncertain (as in the CheXpert labeler, uncertainty wins: "cannot exclude pneumonia"), else inside a
negation scope negative, else positive.
"""

from __future__ import annotations

import re
from typing import Literal

Status = Literal["positive", "negative", "uncertain"]

MAX_SCOPE_WORDS = 12


def _compile(phrases: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"(?<![\w-])(?:" + "|".join(phrases) + r")(?![\w-])", re.IGNORECASE)


PSEUDO = _compile((
    r"no (?:significant |interval |appreciable |substantial )?(?:change|increase|decrease|progression)",
    r"without (?:significant |interval )?change", r"not only", r"not significantly changed",
    r"gram negative", r"no further", r"not necessarily", r"unchanged",
))
NEGATION_PRE = _compile((
    r"no", r"not", r"without", r"negative for", r"free of", r"absence of", r"absent", r"clear of",
    r"rules? out", r"ruled out", r"no evidence of", r"no signs? of", r"never", r"nor", r"denies",
    r"resolution of", r"resolved", r"neither",
))
NEGATION_POST = _compile((
    r"(?:is|are|was|were|has been|have been) (?:not|no longer) (?:seen|identified|present|visualized|"
    r"appreciated|evident|demonstrated|noted|visible|detected)",
    r"not (?:seen|identified|present|visualized|appreciated|evident|demonstrated|noted|visible)",
    r"(?:is|are|has|have)? ?(?:resolved|cleared)", r"(?:is|are) absent", r"(?:was|were) removed",
))
UNCERTAIN_PRE = _compile((
    r"possible", r"possibly", r"probable", r"probably", r"may", r"might", r"could", r"questionable",
    r"question of", r"suspicious for", r"suspected", r"suspect", r"concerning for", r"concern for",
    r"cannot (?:be )?(?:excluded?|ruled? out)", r"can ?not exclude", r"can't exclude",
    r"differential", r"versus", r"vs", r"suggest\w*", r"likely", r"worrisome for", r"equivocal",
    r"indeterminate", r"presumed", r"consider", r"compatible with", r"question", r"borderline",
))
UNCERTAIN_POST = _compile((
    r"(?:can ?not|cannot|could not|can't) be (?:excluded|ruled out|entirely excluded)",
    r"(?:is|are) not (?:excluded|ruled out)", r"not excluded", r"could be", r"may be present",
    r"(?:is|are) suspected", r"(?:is|are) (?:possible|likely|questioned)", r"\?",
))
TERMINATORS = _compile((
    r"but", r"however", r"although", r"though", r"except", r"with the exception of", r"apart from",
    r"aside from", r"which", r"otherwise", r"there is", r"there are", r"there has been",
    r"while", r"whereas", r"yet", r";", r":", r"with",
))
_WORD = re.compile(r"[\w'-]+")


def _mask(text: str, pattern: re.Pattern) -> str:
    return pattern.sub(lambda m: " " * len(m.group()), text)


def _words_between(text: str, start: int, end: int) -> int:
    return len(_WORD.findall(text[start:end]))


def _in_pre_scope(text: str, triggers: list[re.Match], terminators: list[int], start: int) -> bool:
    for trigger in triggers:
        if trigger.end() > start:
            break
        if any(trigger.end() <= t < start for t in terminators):
            continue
        if _words_between(text, trigger.end(), start) <= MAX_SCOPE_WORDS:
            return True
    return False


def _in_post_scope(text: str, triggers: list[re.Match], terminators: list[int], end: int) -> bool:
    for trigger in triggers:
        if trigger.start() < end:
            continue
        if any(end <= t < trigger.start() for t in terminators):
            continue
        if _words_between(text, end, trigger.start()) <= MAX_SCOPE_WORDS:
            return True
    return False


class SentenceScopes:
    """The trigger positions of one sentence, to ask the status of any span in it."""

    def __init__(self, sentence: str):
        self.text = sentence
        masked = _mask(sentence, PSEUDO)
        # An uncertainty phrase such as "cannot be excluded" holds "not": it is no negation.
        self.uncertain_post = list(UNCERTAIN_POST.finditer(masked))
        self.uncertain_pre = list(UNCERTAIN_PRE.finditer(masked))
        unmasked = _mask(_mask(masked, UNCERTAIN_POST), UNCERTAIN_PRE)
        self.negation_post = list(NEGATION_POST.finditer(unmasked))
        self.negation_pre = list(NEGATION_PRE.finditer(_mask(unmasked, NEGATION_POST)))
        self.terminators = [m.start() for m in TERMINATORS.finditer(masked)]

    def status(self, start: int, end: int) -> Status:
        """The status of the mention at ``text[start:end]``."""
        t = self.terminators
        # A terminator inside the mention itself ("with") must not cut its own scope.
        t = [p for p in t if not start <= p < end]
        if _in_post_scope(self.text, self.uncertain_post, t, end) or _in_pre_scope(
            self.text, self.uncertain_pre, t, start
        ):
            return "uncertain"
        if _in_post_scope(self.text, self.negation_post, t, end) or _in_pre_scope(
            self.text, self.negation_pre, t, start
        ):
            return "negative"
        return "positive"
