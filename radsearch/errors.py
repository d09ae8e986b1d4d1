"""Errors that reach the user as one clear line."""


class RadsearchError(Exception):
    """A failure the user can act on; ``str(error)`` is the whole message, one line."""


class ModelMismatchError(RadsearchError):
    """An index holds embeddings of another model than the one asked for."""


class IndexNotFoundError(RadsearchError):
    """No index exists at the given location."""


class IndexOutOfStepWarning(UserWarning):
    """An index's search back end disagrees with its catalog (one line; the next run repairs it)."""


class StoreUnavailableWarning(UserWarning):
    """An index's search back end cannot be opened on its disk (full, read-only): searches are
    answered from the catalog (one line)."""
