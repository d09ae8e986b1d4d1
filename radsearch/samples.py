"""The sample studies shipped inside the package (see ``sample_studies/README.md``)."""

from __future__ import annotations

from pathlib import Path

_SAMPLES = Path(__file__).resolve().parent / "sample_studies"


def demo_index_path() -> Path:
    """Where `radsearch demo` indexes the sample studies: an index of their own, ``~/.radsearch/demo``,
    so that they never mix with (and outrank) the user's own studies in the default index."""
    return Path.home() / ".radsearch" / "demo"


def sample_studies_path() -> Path:
    """The folder of built-in sample studies: 12 VQA-RAD images with reports and one DICOM series."""
    # pip installs packages as plain folders, so the package data is a real folder beside this module.
    if not _SAMPLES.is_dir():
        raise FileNotFoundError(
            f"radsearch's sample studies are missing ({_SAMPLES}); reinstall radsearch with its package data"
        )
    return _SAMPLES
