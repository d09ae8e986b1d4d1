"""Study-file reading: DICOM, PNG and JPEG files to model-ready images and safe metadata.

Runs inside indexer worker processes, so nothing here imports torch.
"""

from radsearch.reading.detect import detect_kind
from radsearch.reading.phi import salted_hash
from radsearch.reading.pixels import render_dicom_frames
from radsearch.reading.prepare import (
    CT_WINDOW_PRESETS,
    CT_WINDOWS,
    NAMED_CT_WINDOWS,
    CtWindow,
    describe_ct_windows,
    parse_ct_windows,
    prepare_channels_for_model,
    prepare_for_model,
    render_ct_windows,
    stack_frames,
)
from radsearch.reading.read import read_file
from radsearch.reading.types import FileKind, ImageFrame, ReadError, ReadResult, SkipFile

__all__ = [
    "CT_WINDOWS",
    "CT_WINDOW_PRESETS",
    "NAMED_CT_WINDOWS",
    "CtWindow",
    "FileKind",
    "ImageFrame",
    "ReadError",
    "ReadResult",
    "SkipFile",
    "describe_ct_windows",
    "detect_kind",
    "parse_ct_windows",
    "prepare_channels_for_model",
    "prepare_for_model",
    "read_file",
    "render_ct_windows",
    "render_dicom_frames",
    "salted_hash",
    "stack_frames",
]
