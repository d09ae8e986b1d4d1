"""CT multi-window rendering as an index choice (`radsearch index DIR --ct-windows chest`): reader,
encoders, the index's record, refusal of another choice, and query files rendered the same way."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from radsearch import similar, stats
from radsearch.cli import app
from radsearch.encoders import create_model
from radsearch.encoders.hashing_tiny import HashingTiny
from radsearch.errors import RadsearchError
from radsearch.index_handle import open_index
from radsearch.indexer import index_folder
from radsearch.query_embedding import embed_file
from radsearch.reading import (
    CT_WINDOW_PRESETS,
    CT_WINDOWS,
    CtWindow,
    describe_ct_windows,
    parse_ct_windows,
    prepare_channels_for_model,
    read_file,
    render_ct_windows,
    stack_frames,
)
from radsearch.storage.store import Store

TINY = "hashing-tiny"
SAMPLES = Path(__file__).resolve().parents[1] / "radsearch" / "sample_studies"
CHEST_RECORD = [{"name": "lung", "width": 1500.0, "level": -600.0},
                {"name": "mediastinum", "width": 350.0, "level": 50.0},
                {"name": "bone", "width": 2000.0, "level": 500.0}]


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    """One CT (CT_small), one MR (MR_small) and one JPEG radiograph, each in its own folder."""
    root = tmp_path / "studies"
    for folder, source in (("ct", get_testdata_file("CT_small.dcm")),
                           ("mr", get_testdata_file("MR_small.dcm")),
                           ("xray", SAMPLES / "images" / "chest_xray_01.jpg")):
        (root / folder).mkdir(parents=True)
        shutil.copy(source, root / folder)
    return root


def _expected_ct(size: int) -> np.ndarray:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    return prepare_channels_for_model(render_ct_windows(apply_modality_lut(ds.pixel_array, ds)), size)


def _new_study_copy(source: Path, target: Path) -> Path:
    """The same pixels as another study (new Study/Series/SOP Instance UIDs)."""
    ds = pydicom.dcmread(source)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    target.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(target)
    return target


# --- the choice ---------------------------------------------------------------------------------


def test_presets_names_and_none_parse_and_bad_choices_are_refused() -> None:
    assert parse_ct_windows("chest") == CT_WINDOWS == parse_ct_windows(" Lung, mediastinum,bone ")
    assert [w.name for w in parse_ct_windows("head")] == ["brain", "subdural", "skull"]
    assert parse_ct_windows("none") == ()
    assert parse_ct_windows([("brain", 80, 40), ("subdural", 200, 80), ("stroke", 40, 40)])[2] == \
        CtWindow("stroke", 40.0, 40.0)
    assert describe_ct_windows(CT_WINDOWS) == \
        "chest (lung W1500/L-600, mediastinum W350/L50, bone W2000/L500)"
    assert describe_ct_windows(()) == "none (grayscale)"
    for bad in ("lung,bone", "lung,mediastinum,bone,brain", "lung,mediastinum,nope", "", "yes"):
        with pytest.raises(RadsearchError, match="chest, head, none, or three of lung, ") as caught:
            parse_ct_windows(bad)
        assert "\n" not in str(caught.value)
    with pytest.raises(RadsearchError, match="positive width"):
        parse_ct_windows([("a", 0, 0), ("b", 1, 0), ("c", 1, 0)])


# --- reader and encoders ------------------------------------------------------------------------


def test_reader_renders_only_grayscale_ct_in_windows(studies: Path) -> None:
    ct = read_file(studies / "ct" / "CT_small.dcm", image_size=96, salt="s", ct_windows=CT_WINDOWS)
    pixels = ct.frames[0].pixels
    assert pixels.shape == (3, 96, 96) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, _expected_ct(96))
    assert len({channel.tobytes() for channel in pixels}) == 3  # three distinct channels
    for path in (studies / "mr" / "MR_small.dcm", studies / "xray" / "chest_xray_01.jpg"):
        windowed = read_file(path, image_size=96, salt="s", ct_windows=CT_WINDOWS).frames[0].pixels
        gray = read_file(path, image_size=96, salt="s").frames[0].pixels
        assert windowed.shape == (96, 96)
        np.testing.assert_array_equal(windowed, gray)


def test_pixel_padding_is_black_in_every_window(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    stored = ds.pixel_array.copy()
    stored[:, :20] = ds.PixelPaddingValue  # -2000: a padded border, outside the scan's circle
    ds.PixelData = stored.tobytes()
    ds.save_as(tmp_path / "padded.dcm")
    pixels = read_file(tmp_path / "padded.dcm", image_size=128, salt="s",
                       ct_windows=CT_WINDOWS).frames[0].pixels  # 128: CT_small's own size
    assert pixels[:, :, :20].max() == 0
    assert pixels[0, :, 20:].min() > 0  # the lung window shows this slice's air as grey


def test_encoders_embed_three_channels_and_replicated_gray_alike() -> None:
    rng = np.random.default_rng(0)
    tiny = HashingTiny()
    gray = rng.integers(0, 256, (3, 64, 64), dtype=np.uint8)
    replicated = np.repeat(gray[:, None], 3, axis=1)
    np.testing.assert_array_equal(tiny.encode_images(replicated), tiny.encode_images(gray))
    mixed = stack_frames([gray[0], replicated[1], _expected_ct(64)])
    assert mixed.shape == (3, 3, 64, 64)
    vectors = tiny.encode_images(mixed)
    np.testing.assert_array_equal(vectors[:2], tiny.encode_images(gray[:2]))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
        tiny.encode_images(np.zeros((1, 2, 64, 64), np.uint8))


def test_radclip_normalises_each_channel() -> None:
    radclip = create_model("radclip-mini")
    ct = _expected_ct(radclip.image_size)
    gray = np.repeat(ct[1][None], 3, axis=0)  # the mediastinum window in all three channels
    vectors = radclip.encode_images(np.stack([ct, gray]))
    np.testing.assert_allclose(vectors[1], radclip.encode_images(ct[1][None])[0], atol=1e-5)
    assert float(vectors[0] @ vectors[1]) < 0.99  # the other two windows change the embedding


# --- the index ----------------------------------------------------------------------------------


def test_index_gives_the_encoder_windowed_ct_and_gray_everything_else(
    studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[np.ndarray] = []
    encode = HashingTiny.encode_images

    def spy(self, images):
        batches.append(np.array(images))
        return encode(self, images)

    monkeypatch.setattr(HashingTiny, "encode_images", spy)
    summary = index_folder(studies, index=tmp_path / "index", model=TINY, workers=0,
                           ct_windows="chest")
    assert summary.images == 3 and summary.failed == 0
    frames = [frame for batch in batches for frame in batch]
    assert all(frame.shape == (3, 64, 64) for frame in frames)
    ct = [frame for frame in frames if len({channel.tobytes() for channel in frame}) == 3]
    assert len(ct) == 1
    np.testing.assert_array_equal(ct[0], _expected_ct(64))
    others = [frame for frame in frames if frame is not ct[0]]
    expected = sorted(read_file(path, image_size=64, salt="s").frames[0].pixels.tobytes()
                      for path in (studies / "mr" / "MR_small.dcm",
                                   studies / "xray" / "chest_xray_01.jpg"))
    assert sorted(frame[0].tobytes() for frame in others if (frame == frame[0]).all()) == expected


def test_the_choice_is_recorded_and_another_is_refused(studies: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    index_folder(studies, index=index, model=TINY, workers=1, ct_windows="chest")  # workers pickle it
    before = stats(index=index)
    assert before["model"]["ct_windows"] == CHEST_RECORD
    with Store.open_for_reading(index) as store:
        assert store.ct_windows == CT_WINDOWS

    for other in ("none", "head", "lung,mediastinum,abdomen"):
        with pytest.raises(RadsearchError, match="renders CT as chest") as caught:
            index_folder(studies, index=index, model=TINY, workers=0, ct_windows=other)
        assert "would not be comparable" in str(caught.value) and "\n" not in str(caught.value)
    assert stats(index=index) == before

    # Without the option a run keeps the index's choice: a new CT is windowed too.
    _new_study_copy(studies / "ct" / "CT_small.dcm", studies / "ct2" / "copy.dcm")
    again = index_folder(studies, index=index, model=TINY, workers=0)
    assert again.indexed == 1 and again.unchanged == 3
    assert stats(index=index)["model"]["ct_windows"] == CHEST_RECORD


def test_a_grayscale_index_refuses_windows_with_one_line(studies: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    index_folder(studies, index=index, model=TINY, workers=0)
    before = stats(index=index)
    assert before["model"]["ct_windows"] == []
    result = subprocess.run(
        [sys.executable, "-m", "radsearch", "index", str(studies), "--index", str(index),
         "--model", TINY, "--workers", "0", "--ct-windows", "chest"],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {index}: this index renders CT as none (grayscale), "
                                    "not chest (lung W1500/L-600")
    assert stats(index=index) == before


def test_cli_index_option_and_stats_json(studies: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    index = tmp_path / "index"
    result = runner.invoke(app, ["index", str(studies), "--index", str(index), "--model", TINY,
                                 "--workers", "0", "--ct-windows", "head"])
    assert result.exit_code == 0, result.output
    data = json.loads(runner.invoke(app, ["stats", "--index", str(index), "--json"]).output)
    assert [w["name"] for w in data["model"]["ct_windows"]] == ["brain", "subdural", "skull"]
    assert tuple(CtWindow(**w) for w in data["model"]["ct_windows"]) == CT_WINDOW_PRESETS["head"]


def test_query_files_are_rendered_like_the_index(studies: Path, tmp_path: Path) -> None:
    """A CT query file against a windowed index (not indexed itself, another study): windowed
    too, so its identical twin in the index scores 1; classify's file path agrees."""
    index = tmp_path / "index"
    index_folder(studies, index=index, model=TINY, workers=0, ct_windows="chest")
    query = _new_study_copy(studies / "ct" / "CT_small.dcm", tmp_path / "query" / "ct.dcm")
    hits = similar(query, index=index, k=3).hits
    with open_index(index) as opened:
        stored, own_study = opened.study_vector(str(studies / "ct" / "CT_small.dcm"))
        gray, _ = embed_file(query, create_model(TINY), opened.store.salt)
        vector = opened.embed(query).vector  # as classify embeds a file the index does not hold
    assert hits[0].study == own_study and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert float(gray @ stored) < 0.99  # a gray query would not have matched it so
    np.testing.assert_allclose(vector, stored, atol=1e-5)


def test_default_model_end_to_end_on_a_windowed_index(studies: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    summary = index_folder(studies, index=index, workers=0, ct_windows="chest")
    assert summary.images == 3 and summary.failed == 0
    query = _new_study_copy(studies / "ct" / "CT_small.dcm", tmp_path / "query" / "ct.dcm")
    hits = similar(query, index=index, k=3).hits
    assert len(hits) == 3
    assert hits[0].images[0].path == str(studies / "ct" / "CT_small.dcm")
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[1].score < 0.95


def test_real_ct_series_windowed_slice_by_slice(shared_data: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    series = shared_data / "dicom_series" / "dicom_numpy_dupe_positions"  # 11 CT slices, 512x512
    mr = shared_data / "dicom_series" / "dicom2nifti" / "anatomical" / "001"  # 4 MR slices
    root = tmp_path / "studies"
    shutil.copytree(series, root / "ct")
    shutil.copytree(mr, root / "mr")
    shapes: list[tuple[int, ...]] = []
    encode = HashingTiny.encode_images

    def spy(self, images):
        shapes.extend(np.asarray(image).shape for image in images
                      if len({channel.tobytes() for channel in image}) == 3)
        return encode(self, images)

    monkeypatch.setattr(HashingTiny, "encode_images", spy)
    summary = index_folder(root, index=tmp_path / "index", model=TINY, workers=0,
                           ct_windows="chest")
    ct_files = [p for p in (root / "ct").iterdir() if p.is_file()]
    assert summary.failed == 0 and summary.images == len(ct_files) + 4
    assert len(shapes) == len(ct_files)  # every CT slice in three windows, no MR slice
    first = sorted(ct_files)[0]
    ds = pydicom.dcmread(first)
    frame = read_file(first, image_size=64, salt="s", ct_windows=CT_WINDOWS).frames[0].pixels
    np.testing.assert_array_equal(
        frame, prepare_channels_for_model(render_ct_windows(apply_modality_lut(ds.pixel_array, ds)), 64))


def test_a_qdrant_store_keeps_the_choice_for_every_machine(studies: Path, tmp_path: Path) -> None:
    pytest.importorskip("qdrant_client")
    where = {"backend": "qdrant", "url": str(tmp_path / "qdrant-local")}
    index_folder(studies, index=tmp_path / "one", model=TINY, workers=0, ct_windows="chest", **where)
    with pytest.raises(RadsearchError, match="renders CT as chest .*: use the same --ct-windows"):
        index_folder(studies, index=tmp_path / "two", model=TINY, workers=0, ct_windows="none",
                     **where)
    # A machine with no catalog of its own searches with the store's record: CT windowed.
    query = _new_study_copy(studies / "ct" / "CT_small.dcm", tmp_path / "query" / "ct.dcm")
    hits = similar(query, index=tmp_path / "nothing", k=1, **where).hits
    assert hits[0].images[0].path == str(studies / "ct" / "CT_small.dcm")
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
