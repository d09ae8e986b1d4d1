"""The sample studies shipped in the package: self-contained, small, every image with its report."""

from __future__ import annotations

from pathlib import Path

import pydicom

from radsearch import samples
from radsearch.reports import read_report_file, report_sentences, sidecar_for_image
from radsearch.samples import sample_studies_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def test_folder_exists_inside_the_package_and_is_small():
    root = sample_studies_path()
    assert root.is_dir()
    assert root.parent == Path(samples.__file__).resolve().parent
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 4 * 1024 * 1024
    assert (root / "README.md").is_file()


def test_twelve_images_four_per_region():
    names = [p.stem for p in _images(sample_studies_path())]
    assert len(names) == 12
    for prefix in ("chest_xray_", "abdomen_ct_", "head_"):
        assert sum(name.startswith(prefix) for name in names) == 4, prefix


def test_every_image_has_a_report_with_findings_and_impression():
    for image in _images(sample_studies_path()):
        sidecar = sidecar_for_image(image)
        assert sidecar is not None and sidecar.suffix == ".txt", image.name
        sentences = report_sentences(read_report_file(sidecar))
        sections = [s.section for s in sentences]
        assert sections[0] == "EXAMINATION", image.name
        assert "FINDINGS" in sections and sections[-1] == "IMPRESSION", image.name
        assert sum(s == "FINDINGS" for s in sections) >= 2, image.name
        assert all(s.text.endswith(".") for s in sentences), image.name


def test_every_sample_image_is_named_in_the_readme():
    readme = (sample_studies_path() / "README.md").read_text(encoding="utf-8")
    for image in _images(sample_studies_path()):
        assert f"`{image.name}`" in readme
    assert "CC0 1.0" in readme and "Copyright (c) 2016 icometrix NV" in readme


def test_dicom_series_is_one_real_series():
    series = sample_studies_path() / "dicom" / "mr_shoulder"
    files = sorted(series.iterdir())
    assert len(files) == 4
    datasets = [pydicom.dcmread(f) for f in files]
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert {ds.Modality for ds in datasets} == {"MR"}
    assert len({tuple(ds.ImagePositionPatient) for ds in datasets}) == 4  # four distinct slices
    for ds in datasets:
        pixels = ds.pixel_array
        assert pixels.shape == (64, 64) and pixels.std() > 0
