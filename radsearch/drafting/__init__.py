"""Report drafting: a first draft of a study's report from its neighbours' reports, with citations.

``draft(query, index, k, drafter)`` is the public function (``radsearch draft``; ``Index.draft`` on
an open index); drafters are registered by name (``list_drafters``); ``findings`` is the
negation-aware finding extractor that settles contradictions and scores drafts.
"""

from radsearch.drafting._registry import DEFAULT_DRAFTER, create_drafter, list_drafters, register_drafter
from radsearch.drafting.base import Citation, Draft, DraftSentence
from radsearch.drafting.compose import draft

__all__ = ["DEFAULT_DRAFTER", "Citation", "Draft", "DraftSentence", "create_drafter", "draft",
           "list_drafters", "register_drafter"]
