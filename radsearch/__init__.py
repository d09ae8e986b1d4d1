"""radsearch: radiology embedding search and retrieval.

The Python API (the CLI is a thin layer over it)::

    from radsearch.indexer import index_folder
    from radsearch import open_index, search, Filters

    index_folder("studies/", index="my-index")
    results = search("right lower lobe consolidation", index="my-index", k=5)

    with open_index("my-index") as index:  # one open index for many questions
        hits = index.search("pleural effusion", filters=Filters(modality="CR")).hits
        index.similar(hits[0].study), index.show(hits[0].study), index.stats()
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "open_index": "radsearch.index_handle",
    "Index": "radsearch.index_handle",
    "search": "radsearch.retrieval",
    "similar": "radsearch.retrieval",
    "SearchResults": "radsearch.retrieval",
    "StudyHit": "radsearch.retrieval",
    "show": "radsearch.studies",
    "stats": "radsearch.studies",
    "remove": "radsearch.removal",
    "Filters": "radsearch.filters",
    "classify": "radsearch.zeroshot",
    "label_query": "radsearch.label_search",
    "create_model": "radsearch.encoders",
    "list_models": "radsearch.encoders",
    "draft": "radsearch.drafting",
    "Draft": "radsearch.drafting",
    "list_drafters": "radsearch.drafting",
    "RadsearchError": "radsearch.errors",
    "check_index": "radsearch.health",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Lazy: `import radsearch` stays cheap; torch and FAISS load only when used. The object is kept
    # as a module attribute, so later lookups no longer come here. No submodule may be named after
    # an export: importing it would set the package attribute to the module.
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'radsearch' has no attribute {name!r}")
