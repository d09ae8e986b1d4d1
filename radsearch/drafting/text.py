"""One text normalisation for every drafter's output and every reference, so figures compare.

``normalise``: Unicode NFKC, lower case, every character that is not a letter or a digit becomes a
space (a decimal point between digits is kept: "3.5 cm" stays "3.5 cm"), whitespace collapsed;
tokens are the space-separated words. Section headings are not part of the text scored: a report
is scored as its sentences, in order (``report_body``), so a draft with FINDINGS/IMPRESSION headings
and a reference without them compare on what they say.
"""

from __future__ import annotations

import re
import unicodedata

from radsearch.reports import report_sentences

_NOT_WORD = re.compile(r"(?:(?<!\d)\.|\.(?!\d)|[^\w.])+")


def normalise(text: str) -> str:
    """Lower-cased words and numbers separated by single spaces; see the module docstring."""
    text = unicodedata.normalize("NFKC", text).lower().replace("_", " ")
    return " ".join(_NOT_WORD.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    return normalise(text).split()


def report_body(report: str) -> str:
    """The report's sentences joined in order, without section headings."""
    return " ".join(sentence.text for sentence in report_sentences(report))
