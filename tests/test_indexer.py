"""End-to-end indexing on real files: counts, failures, incremental runs, pruning, model records."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from radsearch import Filters, search, show, similar, stats
from radsearch.errors import ModelMismatchError, RadsearchError
from radsearch.indexer import index_folder
from tests.corpus import build_corpus

TINY = "hashing-tiny"


@pytest.fixture
def corpus(tmp_path: Path, shared_data: Path) -> tuple[Path, dict]:
    root = tmp_path / "studies"
    info = build_corpus(root, shared_data)
    return root, info


def _index(root: Path, index: Path, info: dict, **kwargs):
    return index_folder(root, index=index, reports=info["reports_csv"], model=TINY, workers=0,
                        **kwargs)


def test_first_run_indexes_everything_and_reports_each_bad_file(corpus, tmp_path):
    root, info = corpus
    index = tmp_path / "index"
    summary = index_folder(root, index=index, reports=info["reports_csv"], model=TINY, workers=1)

    failures = {Path(path).name: reason for path, reason in summary.failures}
    assert set(failures) == set(info["bad"])
    for name, expected in info["bad"].items():
        assert expected in failures[name].lower(), failures[name]
        assert "\n" not in failures[name]
    skipped = {Path(path).name for path, _ in summary.skips}
    assert skipped == {"rtstruct.dcm"}

    counts = stats(index=index)
    # CT_small, MR_small, JPEG2000 (extension-less), 4 series slices, 6 medpix images.
    assert counts["images"] == 3 + info["series_files"] + len(info["medpix"])
    assert counts["failed"] == 3
    # the SR report and one CSV report per medpix image
    assert counts["reports"] == 1 + len(info["medpix"])
    assert counts["sentences"] >= counts["reports"]
    # medpix images have their own reports, so each is its own study; the series is one study.
    assert counts["series"] >= 1 + len(info["medpix"]) + 1
    assert counts["model"]["name"] == TINY
    # the images' files plus the SR
    assert summary.indexed == 4 + info["series_files"] + len(info["medpix"])


def test_second_run_is_a_no_op_and_changes_are_picked_up(corpus, tmp_path):
    root, info = corpus
    index = tmp_path / "index"
    first = _index(root, index, info)
    before = stats(index=index)

    again = _index(root, index, info)
    assert again.indexed == 0 and again.failed == 0 and again.images == 0
    assert again.unchanged == first.indexed + first.failed + first.skipped
    after = stats(index=index)
    assert after.pop("last_run")["unchanged"] == again.unchanged  # a run of its own, on record
    before.pop("last_run")
    assert after == before

    # Touched but identical content: not re-embedded.
    series_file = sorted((root / "series").iterdir())[0]
    os.utime(series_file, ns=(time.time_ns(), time.time_ns()))
    touched = _index(root, index, info)
    assert touched.indexed == 0 and touched.unchanged == again.unchanged

    # Changed content: re-embedded, counts unchanged (same file replaced).
    medpix_image = root / "medpix" / info["medpix"][0]["image_path"]
    other = root / "medpix" / info["medpix"][1]["image_path"]
    shutil.copy(other, medpix_image)
    changed = _index(root, index, info)
    assert changed.indexed == 1 and changed.images == 1
    assert stats(index=index)["images"] == before["images"]


def test_prune_removes_entries_of_deleted_files(corpus, tmp_path):
    root, info = corpus
    index = tmp_path / "index"
    _index(root, index, info)
    before = stats(index=index)
    shutil.rmtree(root / "series")

    kept = _index(root, index, info)
    assert kept.missing == info["series_files"]
    assert stats(index=index)["images"] == before["images"]

    pruned = _index(root, index, info, prune=True)
    assert pruned.removed == info["series_files"]
    after = stats(index=index)
    assert after["images"] == before["images"] - info["series_files"]
    assert after["studies"] == before["studies"] - 1
    assert after["series"] == before["series"] - 1


def test_report_search_finds_the_captioned_study(corpus, tmp_path):
    root, info = corpus
    index = tmp_path / "index"
    _index(root, index, info)
    target = info["medpix"][2]
    results = search(target["text"], index=index, k=3, target="reports")
    top = results.hits[0]
    assert top.study.endswith(target["image_path"])
    assert top.sentences and top.sentences[0].text in target["text"]
    assert top.images[0].path.endswith(target["image_path"])


def test_similar_image_finds_its_copy_in_another_study(corpus, tmp_path):
    root, info = corpus
    index = tmp_path / "index"
    copy_dir = root / "copies"
    copy_dir.mkdir()
    original = root / "medpix" / info["medpix"][3]["image_path"]
    shutil.copy(original, copy_dir / "copy.jpg")
    _index(root, index, info)

    results = similar(str(original), index=index, k=3)
    assert results.hits[0].images[0].path == str(copy_dir / "copy.jpg")
    assert results.hits[0].score == pytest.approx(1.0, abs=1e-5)
    # the query's own study is not returned
    assert all(not hit.study.endswith(info["medpix"][3]["image_path"]) for hit in results.hits)


def test_filters_restrict_results(corpus, tmp_path):
    root, info = corpus
    index = tmp_path / "index"
    _index(root, index, info)
    ct = search("abdomen", index=index, k=50, filters=Filters(modality="CT"))
    assert ct.hits
    assert all("CT" in hit.modalities for hit in ct.hits)
    mri = search("brain", index=index, k=50, filters=Filters(modality="MRI"))
    assert all(set(hit.modalities) & {"MR", "MRI"} for hit in mri.hits)
    nothing = search("anything", index=index, k=5, filters=Filters(date_from="2100-01-01"))
    assert nothing.hits == []


def test_show_resolves_a_file_to_its_study_with_slices_in_order(corpus, tmp_path):
    root, info = corpus
    index = tmp_path / "index"
    _index(root, index, info)
    any_slice = sorted((root / "series").iterdir())[0]
    detail = show(str(any_slice), index=index)
    assert len(detail.series) == 1
    assert len(detail.series[0].images) == info["series_files"]


def test_an_index_refuses_embeddings_of_another_model(corpus, tmp_path):
    root, info = corpus
    index = tmp_path / "index"
    _index(root, index, info)
    with pytest.raises(ModelMismatchError, match="refusing"):
        index_folder(root / "medpix", index=index, model="radclip-mini", workers=0)


def test_missing_index_is_one_clear_error(tmp_path):
    with pytest.raises(RadsearchError, match="no radsearch index"):
        stats(index=tmp_path / "nothing")


def test_dicomdir_symlink_loops_and_odd_names(tmp_path, shared_data):
    from pydicom.data import get_testdata_file

    root = tmp_path / "odd"
    (root / "sub").mkdir(parents=True)
    shutil.copy(get_testdata_file("DICOMDIR"), root / "DICOMDIR")
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    odd_names = ["spaced name é.dcm", "line\nbreak.dcm", "-dash.dcm"]
    for name in odd_names:
        shutil.copy(get_testdata_file("CT_small.dcm"), root / "sub" / name)
    (root / "sub" / "bad\tname.dcm").write_bytes(b"not dicom at all")

    summary = index_folder(root, index=tmp_path / "index", model=TINY, workers=0)
    assert [Path(p).name for p, _ in summary.skips] == ["DICOMDIR"]
    assert "DICOMDIR" in summary.skips[0][1]
    assert summary.indexed == len(odd_names)  # each file once, although the loop reaches it again
    assert [Path(p).name for p, _ in summary.failures] == ["bad\tname.dcm"]


def test_a_single_file_can_be_indexed(tmp_path):
    from pydicom.data import get_testdata_file

    image = tmp_path / "one.dcm"
    shutil.copy(get_testdata_file("MR_small.dcm"), image)
    summary = index_folder(image, index=tmp_path / "index", model=TINY, workers=0)
    assert summary.indexed == 1 and summary.images == 1
    assert show(str(image), index=tmp_path / "index").series[0].modality == "MR"


def test_similar_accepts_a_real_study_uid(corpus, tmp_path):
    import pydicom

    root, info = corpus
    index = tmp_path / "index"
    _index(root, index, info)
    series_file = sorted((root / "series").iterdir())[0]
    uid = pydicom.dcmread(series_file, stop_before_pixels=True).StudyInstanceUID
    own = show(uid, index=index)
    assert str(series_file) in own.series[0].images
    results = similar(uid, index=index, k=3)
    assert len(results.hits) == 3
    assert own.study not in [hit.study for hit in results.hits]
    assert results.hits[0].score >= results.hits[-1].score
