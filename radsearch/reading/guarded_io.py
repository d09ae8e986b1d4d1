"""Reading DICOM headers without letting a hostile file allocate memory or fill the logs."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO


class BoundedReader:
    """A file whose ``read(n)`` never asks for more than its first ``size`` bytes hold.

    pydicom reads an element's value with one ``read(declared length)``, and Python allocates
    that many bytes before the read comes back short: a 1 kB file declaring a 4 GB element
    would allocate 4 GB.
    """

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self._size = size

    def read(self, n: int | None = -1) -> bytes:
        left = max(self._size - self._handle.tell(), 0)
        return self._handle.read(left if n is None or n < 0 else min(n, left))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom warnings may quote element values (names, IDs): keep them out of logs."""
    logger = logging.getLogger("pydicom")
    was_disabled = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = was_disabled
