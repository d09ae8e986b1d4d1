"""Cheap file-type detection from the first bytes of a file."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from radsearch.reading.types import FileKind

HEAD_BYTES = 512
_MEDIA_STORAGE_DIRECTORY = b"1.2.840.10008.1.3.10"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
# Explicit-VR codes; the second set uses 2 reserved bytes and a 4-byte length.
_VRS = {
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST",
    b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
}
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"UV"}
# Some writers leave stray bytes before a meta-less data set (pydicom's no_meta.dcm has one).
_MAX_STRAY_BYTES = 3
_MAX_IMPLICIT_FIRST_LENGTH = 1024
_GZIP_MAGIC = b"\x1f\x8b"
NIFTI_HEADER_BYTES = {1: 348, 2: 540}  # sizeof_hdr of NIfTI-1 and NIfTI-2
_NIFTI2_MAGICS = (b"n+2\x00\r\n\x1a\n", b"ni2\x00\r\n\x1a\n")
_NIFTI1_MAGICS = (b"n+1\x00", b"ni1\x00")
_GZIP_HEAD_INPUT = 64 * 1024  # compressed bytes read to find a NIfTI header (a gzip name field may be long)


def read_head(path: Path, n: int = HEAD_BYTES) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def detect_kind(path: Path) -> FileKind | None:
    """The kind of file by its content (never its extension), or None if it is none we read.

    Raises OSError when the file cannot be read (permission denied ...), so that an unreadable
    study is reported rather than silently ignored.
    """
    path = Path(path)
    if path.is_dir():
        return None
    head = read_head(path)
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head.startswith(_JPEG_SOI):
        return "jpeg"
    if head[128:132] == b"DICM":
        if path.name.upper() == "DICOMDIR" or _is_media_directory(head):
            return "dicomdir"
        return "dicom"
    if nifti_version(head) or (head.startswith(_GZIP_MAGIC) and nifti_version(gunzip_head(path))):
        return "nifti"
    if dataset_offset(head) is not None:
        return "dicomdir" if path.name.upper() == "DICOMDIR" else "dicom"
    return None


def nifti_version(head: bytes) -> int | None:
    """1 or 2 when ``head`` opens with a NIfTI-1 or NIfTI-2 header (either byte order), else None."""
    for order in "<>":
        if len(head) >= 4 and struct.unpack_from(order + "i", head)[0] == NIFTI_HEADER_BYTES[1]:
            if head[344:348] in _NIFTI1_MAGICS:
                return 1
        if len(head) >= 12 and struct.unpack_from(order + "i", head)[0] == NIFTI_HEADER_BYTES[2]:
            if head[4:12] in _NIFTI2_MAGICS:
                return 2
    return None


def gunzip_head(path: Path, n: int = NIFTI_HEADER_BYTES[2]) -> bytes:
    """The first ``n`` bytes a gzip file inflates to (fewer when it ends or is damaged before),
    reading at most 64 kB of it: enough to recognise a compressed NIfTI header."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    out = b""
    with open(path, "rb") as f:
        data = f.read(_GZIP_HEAD_INPUT)
    try:
        while data and len(out) < n and not inflater.eof:
            out += inflater.decompress(data, n - len(out))
            data = inflater.unconsumed_tail
    except zlib.error:
        pass
    return out


def _is_media_directory(head: bytes) -> bool:
    """Whether the file meta's Media Storage SOP Class (0002,0002) is a DICOMDIR."""
    for element, start, length in _meta_elements(head):
        if element == 0x0002:
            return head[start : start + length].rstrip(b"\x00 ") == _MEDIA_STORAGE_DIRECTORY
    return False


def file_meta_end(head: bytes) -> int | None:
    """Where the data set starts after a preamble and file meta, None when ``head`` ends first."""
    end = None
    for _, start, length in _meta_elements(head):
        end = start + length
    if end is None or end + 4 > len(head) or head[end : end + 2] == b"\x02\x00":
        return None
    return end


def _meta_elements(head: bytes) -> Iterator[tuple[int, int, int]]:
    """(element number, value start, value length) of the group 0x0002 elements after "DICM"
    (always explicit VR little endian), as far as ``head`` holds them whole."""
    pos = 132
    while pos + 8 <= len(head):
        group, elem = struct.unpack_from("<HH", head, pos)
        if group != 0x0002:
            return
        vr = head[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(head):
                return
            (length,) = struct.unpack_from("<I", head, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", head, pos + 6)
            start = pos + 8
        if start + length > len(head):
            return
        yield elem, start, length
        pos = start + length


def dataset_offset(head: bytes) -> int | None:
    """Where a DICOM data set without preamble starts in ``head``, or None if none does.

    A data set is recognised when it opens with a group 0x0002 or 0x0008 element (little or big
    endian, explicit or implicit VR) followed by a second element with a larger tag.
    """
    for offset in range(min(_MAX_STRAY_BYTES, max(len(head) - 8, 0)) + 1):
        for big_endian in (False, True):
            if _plausible_start(head, offset, big_endian):
                return offset
    return None


def _plausible_start(head: bytes, offset: int, big_endian: bool) -> bool:
    first = _element(head, offset, big_endian)
    if first is None:
        return False
    tag, end = first
    if tag >> 16 not in ((0x0008,) if big_endian else (0x0002, 0x0008)):
        return False
    if end + 8 > len(head):  # the second element lies beyond what we read: accept
        return True
    second = _element(head, end, big_endian)
    return second is not None and second[0] > tag


def _element(head: bytes, pos: int, big_endian: bool) -> tuple[int, int] | None:
    """(tag, end position) of a plausible element header at ``pos``, else None."""
    if pos + 8 > len(head):
        return None
    order = ">" if big_endian else "<"
    group, elem = struct.unpack_from(order + "HH", head, pos)
    vr = head[pos + 4 : pos + 6]
    if vr in _VRS:
        if vr in _LONG_VRS:
            if head[pos + 6 : pos + 8] != b"\x00\x00" or pos + 12 > len(head):
                return None
            (length,) = struct.unpack_from(order + "I", head, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from(order + "H", head, pos + 6)
            start = pos + 8
    elif not big_endian:  # implicit VR is always little endian
        (length,) = struct.unpack_from("<I", head, pos + 4)
        if length > _MAX_IMPLICIT_FIRST_LENGTH:
            return None
        start = pos + 8
    else:
        return None
    if length == 0xFFFFFFFF:  # undefined-length sequence: no end to check against
        return None
    return (group << 16) | elem, start + length
