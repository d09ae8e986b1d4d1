"""Image sizes declared inside compressed frames (JPEG, JPEG-LS, JPEG 2000), read before decoding.

A decoder allocates what its codestream declares, whatever the DICOM header says: a 3 kB
HTJ2K frame declaring 512 x 8,389,120 pixels made openjpeg allocate 8 GB (found by fuzzing).
"""

from __future__ import annotations

import struct

_J2K_SIZ = b"\xff\x4f\xff\x51"  # start of codestream, then the image and tile size marker
# JPEG start-of-frame markers (SOF0-SOF15 without DHT, JPG and DAC), and JPEG-LS's SOF55.
_SOF_MARKERS = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}) | {0xF7}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # markers without a length
HEADER_BYTES = 4096  # where the size markers of a frame are to be found


def declared_size(frame: bytes) -> tuple[int, int, int] | None:
    """(rows, columns, components) a compressed frame declares, None when it declares none we read.

    JPEG and JPEG-LS: the start-of-frame segment; JPEG 2000 (also HTJ2K, and inside a JP2 file):
    the SIZ segment, its image area less its offset.
    """
    if frame.startswith(b"\xff\xd8"):
        return _jpeg_size(frame)
    at = frame.find(_J2K_SIZ, 0, HEADER_BYTES)
    if at != -1 and len(frame) >= at + 42:
        xsiz, ysiz, x_offset, y_offset = struct.unpack_from(">IIII", frame, at + 8)
        (components,) = struct.unpack_from(">H", frame, at + 40)
        return max(ysiz - y_offset, 0), max(xsiz - x_offset, 0), components
    return None


def _jpeg_size(frame: bytes) -> tuple[int, int, int] | None:
    pos = 2
    while pos + 4 <= min(len(frame), HEADER_BYTES):
        if frame[pos] != 0xFF:
            return None
        marker = frame[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", frame, pos + 2)
        if marker in _SOF_MARKERS:
            if pos + 10 > len(frame):
                return None
            rows, columns, components = struct.unpack_from(">HHB", frame, pos + 5)
            return rows, columns, components
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None
