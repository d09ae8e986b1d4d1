"""Slice pooling: the volume embedding of a series, from the module up to a real indexed series."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from radsearch import stats
from radsearch.encoders._radclip_weights import initial_projections
from radsearch.encoders.radclip_mini import RadClipMini
from radsearch.encoders.slice_pooling import (
    SlicePooling,
    mean_pool,
    module_from_tensors,
    module_tensors,
    pool_volume,
    pool_volumes,
    prepare_volume,
)
from radsearch.indexer import aggregate, index_folder
from radsearch.storage.store import CATALOG_FILE
from radsearch.storage.vectors import read_by_ids, read_vectors
from radsearch.training.pooling import fit_slice_pooling, load_slice_pooling, save_slice_pooling

DIM = 32
# Two real series: a 4-slice MR, and an 11-slice CT with duplicate slice positions (ties).
SERIES = ("dicom2nifti/hitachi/anatomical/001", "dicom_numpy_dupe_positions")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models: a second intra-op thread only adds contention on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def _volume(rng: np.random.Generator, n: int, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    positions = rng.uniform(-600, 600) + rng.uniform(0.5, 5) * np.arange(n)
    return _unit(rng.normal(size=(n, dim))), positions


def _randomised(dim: int = DIM, heads: int = 4, seed: int = 1, **kwargs) -> torch.nn.Module:
    """A SlicePooling far from its mean-equivalent init: every weight random, like a trained one."""
    module = SlicePooling(dim, heads=heads, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module.eval()


def _forward(module, vectors: np.ndarray, positions: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = module(torch.tensor(vectors)[None], torch.tensor(positions)[None])[0].numpy()
    return out / np.linalg.norm(out)


# --- the module -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 7, 64])
def test_untrained_module_is_the_renormalised_mean(n):
    rng = np.random.default_rng(n)
    vectors, positions = _volume(rng, n)
    module = SlicePooling(DIM, heads=4)
    expected = mean_pool(vectors)
    np.testing.assert_allclose(pool_volume(vectors, positions, module), expected, atol=1e-6)
    np.testing.assert_allclose(pool_volume(vectors, None, module), expected, atol=1e-6)
    np.testing.assert_allclose(_forward(module, vectors, positions), expected, atol=1e-6)


@pytest.mark.parametrize("trained", [False, True])
def test_output_depends_on_the_set_of_slices_not_their_order(trained):
    module = _randomised() if trained else SlicePooling(DIM, heads=4)
    rng = np.random.default_rng(3)
    vectors, positions = _volume(rng, 20)
    positions[5] = positions[6]  # a tie, as in series with duplicate positions
    reference = pool_volume(vectors, positions, module)
    for _ in range(5):
        order = rng.permutation(20)
        # The module itself is invariant (no order-based encoding) ...
        np.testing.assert_allclose(
            _forward(module, vectors[order], positions[order]),
            _forward(module, vectors, positions), atol=1e-6,
        )
        # ... and pool_volume's canonical order makes the stored vector bit-identical.
        np.testing.assert_array_equal(pool_volume(vectors[order], positions[order], module), reference)


def test_positions_are_relative_to_the_volume():
    module = _randomised()
    vectors, positions = _volume(np.random.default_rng(4), 12)
    reference = pool_volume(vectors, positions, module)
    # Where the patient lay on the table does not matter ...
    np.testing.assert_allclose(pool_volume(vectors, positions + 1234.5, module), reference, atol=1e-6)
    np.testing.assert_allclose(
        _forward(module, vectors, positions - 800.0), _forward(module, vectors, positions), atol=1e-6
    )
    # ... but where each slice lies within the volume does.
    moved = positions.copy()
    moved[[0, -1]] = moved[[-1, 0]]
    assert np.abs(pool_volume(vectors, moved, module) - reference).max() > 1e-3


def test_unknown_positions_fall_back_to_the_slice_order():
    module = _randomised()
    vectors, _ = _volume(np.random.default_rng(5), 9)
    by_order = pool_volume(vectors, None, module)
    np.testing.assert_array_equal(by_order, pool_volume(vectors, np.arange(9.0), module))
    partly_known = np.array([1.0] * 8 + [np.nan])
    np.testing.assert_array_equal(by_order, pool_volume(vectors, partly_known, module))
    assert np.abs(pool_volume(vectors[::-1], None, module) - by_order).max() > 1e-3


def test_long_series_are_sampled_evenly():
    rng = np.random.default_rng(6)
    vectors, positions = _volume(rng, 300)
    order = rng.permutation(300)
    kept_vectors, kept_positions = prepare_volume(vectors[order], positions[order], max_slices=64)
    assert len(kept_positions) == 64 and len(np.unique(kept_positions)) == 64
    assert kept_positions[0] == positions.min() and kept_positions[-1] == positions.max()
    steps = np.round(np.diff(kept_positions) / np.diff(positions).mean())
    assert set(steps) == {4, 5}  # every 299/63 = 4.75th slice
    module = _randomised(max_slices=64)
    pooled = pool_volume(vectors[order], positions[order], module)
    np.testing.assert_array_equal(pooled, pool_volume(kept_vectors, kept_positions, module))
    np.testing.assert_array_equal(pooled, pool_volume(vectors, positions, module))


def test_batched_pooling_matches_one_at_a_time_and_a_single_slice_is_itself():
    module = _randomised()
    rng = np.random.default_rng(7)
    volumes = [_volume(rng, n) for n in (1, 3, 17, 40)]
    batched = pool_volumes(module, volumes)
    for row, (vectors, positions) in enumerate(volumes):
        np.testing.assert_allclose(batched[row], pool_volume(vectors, positions, module), atol=1e-6)
    np.testing.assert_allclose(batched[0], volumes[0][0][0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-6)


def test_weights_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    module = _randomised(layers=2, heads=8)
    path = tmp_path / "model.safetensors"
    save_file({"other.weight": torch.ones(3)}, str(path))
    save_slice_pooling(module, path)
    save_slice_pooling(module, path)  # replaces its own tensors, keeps the others
    stored = load_file(str(path))
    assert "other.weight" in stored
    assert all(name == "other.weight" or name.startswith("slice_pooling.") for name in stored)
    loaded = load_slice_pooling(path)
    assert (loaded.heads, len(loaded.blocks)) == (8, 2)
    vectors, positions = _volume(np.random.default_rng(8), 10)
    np.testing.assert_array_equal(
        pool_volume(vectors, positions, loaded), pool_volume(vectors, positions, module)
    )
    again = module_from_tensors(module_tensors(module))
    np.testing.assert_array_equal(
        pool_volume(vectors, positions, again), pool_volume(vectors, positions, module)
    )


# --- encoders -------------------------------------------------------------------------------------


def test_radclip_mini_pools_with_its_file_and_otherwise_by_the_mean(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from radsearch.encoders import _radclip_weights

    projections = {name: torch.from_numpy(w) for name, w in initial_projections().items()}
    plain, pooled = tmp_path / "plain.safetensors", tmp_path / "pooled.safetensors"
    save_file(projections, str(plain))
    module = _randomised(dim=512, heads=8)
    save_file({**projections, **module_tensors(module)}, str(pooled))

    untrained = RadClipMini(weights_file=plain)
    trained = RadClipMini(weights_file=pooled)
    vectors, positions = _volume(np.random.default_rng(9), 6, dim=512)
    assert untrained.slice_pooling is None
    np.testing.assert_array_equal(untrained.pool_slices(vectors, positions), mean_pool(vectors))
    np.testing.assert_array_equal(
        trained.pool_slices(vectors, positions), pool_volume(vectors, positions, module)
    )
    # Pooling weights are part of the model's identity; without them the hash is the one of the
    # untrained model (no weights file at all), as before slice pooling existed.
    monkeypatch.setattr(_radclip_weights, "WEIGHTS_FILE", tmp_path / "absent.safetensors")
    assert RadClipMini().weights_hash() == untrained.weights_hash()
    assert trained.weights_hash() != untrained.weights_hash()


# --- training -------------------------------------------------------------------------------------


def _position_task(rng: np.random.Generator, count: int) -> list:
    """Each report matches the upper half of its volume; the lower half shows another case.

    The mean of the slices is as close to the other case's report as to its own, so only a pooling
    that weights slices by their place in the volume retrieves the right report. Volumes differ in
    slice count, spacing and table position, and arrive shuffled.
    """
    texts = _unit(rng.normal(size=(count, DIM)))
    examples = []
    for i in range(count):
        n = int(rng.integers(6, 30))
        positions = rng.uniform(-800, 800) + rng.uniform(0.5, 5) * np.arange(n)
        upper = positions > np.median(positions)
        content = np.where(upper[:, None], texts[i], texts[(i + 1) % count])
        vectors = _unit(content + 0.35 * rng.normal(size=(n, DIM)))
        order = rng.permutation(n)
        examples.append((vectors[order], positions[order], texts[i]))
    return examples


def _recall_at_1(volumes: np.ndarray, texts: list) -> float:
    scores = volumes @ np.stack(texts).T
    return float(np.mean(scores.argmax(axis=1) == np.arange(len(texts))))


def test_training_learns_to_weight_slices_by_position():
    rng = np.random.default_rng(0)
    train, test = _position_task(rng, 128), _position_task(rng, 128)
    run = fit_slice_pooling(train, heads=4, epochs=20, batch_size=32, lr=3e-3, seed=0)
    assert run.losses[-1] < 0.2 * run.losses[0]

    texts = [text for _, _, text in test]
    mean_r1 = _recall_at_1(np.stack([mean_pool(v) for v, _, _ in test]), texts)
    trained_r1 = _recall_at_1(pool_volumes(run.module, [(v, p) for v, p, _ in test]), texts)
    assert mean_r1 < 0.6
    assert trained_r1 > 0.8 and trained_r1 > mean_r1 + 0.25


# --- the indexer, on real series ------------------------------------------------------------------


def _copy_series(shared_data: Path, root: Path, *, reverse: bool) -> None:
    """Copy the test series under ``root``; ``reverse`` renames files so their order is reversed."""
    for number, relative in enumerate(SERIES):
        files = sorted(p for p in (shared_data / "dicom_series" / relative).iterdir() if p.is_file())
        target = root / f"series{number}"
        target.mkdir(parents=True)
        for index, source in enumerate(files):
            rank = len(files) - 1 - index if reverse else index
            shutil.copy(source, target / f"slice{rank:03d}.dcm")


def _series_vectors(index: Path) -> dict[tuple, np.ndarray]:
    """Series vectors keyed by their sorted slice positions (series keys are salted per index)."""
    conn = sqlite3.connect(index / CATALOG_FILE)
    vectors = {}
    dim = int(conn.execute("SELECT value FROM meta WHERE key = 'model.dim'").fetchone()[0])
    for series_id, vector_id in conn.execute(
        "SELECT ref_id, id FROM vectors WHERE collection = 'series'"
    ).fetchall():
        positions = tuple(sorted(
            row[0] for row in conn.execute(
                "SELECT slice_position FROM images WHERE series_id = ?", (series_id,)
            )
        ))
        vectors[positions] = read_by_ids(conn, [vector_id], dim)[0]
    conn.close()
    return vectors


def _repool(index: Path, pool) -> None:
    from radsearch.storage import catalog

    conn = catalog.connect(index / CATALOG_FILE)
    conn.execute("UPDATE series SET dirty = 1")
    aggregate.update_series(conn, 64, pool)
    conn.close()


def test_reordering_the_files_of_a_series_keeps_its_volume_embedding(shared_data, tmp_path):
    for name in ("forward", "reversed"):
        _copy_series(shared_data, tmp_path / name, reverse=name == "reversed")
        index_folder(tmp_path / name, index=tmp_path / f"{name}.idx", model="hashing-tiny", workers=0)
    forward = _series_vectors(tmp_path / "forward.idx")
    backward = _series_vectors(tmp_path / "reversed.idx")
    assert len(forward) == len(SERIES) and forward.keys() == backward.keys()
    for key in forward:
        np.testing.assert_allclose(forward[key], backward[key], atol=1e-6)

    # The same with a slice pooling far from the mean (ties in positions included).
    module = _randomised(dim=64, heads=8)
    for name in ("forward", "reversed"):
        _repool(tmp_path / f"{name}.idx", lambda v, p: pool_volume(v, p, module))
    repooled_forward = _series_vectors(tmp_path / "forward.idx")
    repooled_backward = _series_vectors(tmp_path / "reversed.idx")
    for key in forward:
        np.testing.assert_array_equal(repooled_forward[key], repooled_backward[key])
        assert np.abs(repooled_forward[key] - forward[key]).max() > 1e-3


def test_every_multi_slice_series_gets_a_volume_embedding(shared_data, tmp_path):
    index = tmp_path / "index"
    index_folder(shared_data / "dicom_series", index=index, model="hashing-tiny", workers=0)
    conn = sqlite3.connect(index / CATALOG_FILE)
    dim = int(conn.execute("SELECT value FROM meta WHERE key = 'model.dim'").fetchone()[0])
    series = conn.execute(
        "SELECT series_id, COUNT(*) FROM images GROUP BY series_id HAVING COUNT(*) > 1"
    ).fetchall()
    assert len(series) >= 20
    with_vector = {row[0] for row in conn.execute(
        "SELECT ref_id FROM vectors WHERE collection = 'series'"
    )}
    assert {series_id for series_id, _ in series} <= with_vector
    # hashing-tiny has no trained pooling: each volume embedding is the mean of its slices.
    for series_id, _ in series:
        slices = read_by_ids(conn, [vector_id for (vector_id,) in conn.execute(
            "SELECT vectors.id FROM vectors JOIN images ON images.id = vectors.ref_id "
            "WHERE collection = 'images' AND images.series_id = ?", (series_id,)
        )], dim)
        volume = read_vectors(conn, "series", [series_id], dim)[0]
        np.testing.assert_allclose(volume, mean_pool(slices), atol=1e-6)
    conn.close()
    assert stats(index=index)["series"] == len(with_vector)


def test_a_series_whose_images_disagree_takes_their_most_common_modality(shared_data, tmp_path):
    """Whatever value the series held last (the file a run happened to write last, which a
    resumed run changes), aggregation settles it from its images: the most common, ties to the
    alphabetically first."""
    from radsearch.storage import catalog

    _copy_series(shared_data, tmp_path / "studies", reverse=False)
    index = tmp_path / "studies.idx"
    index_folder(tmp_path / "studies", index=index, model="hashing-tiny", workers=0)
    conn = catalog.connect(index / CATALOG_FILE)
    series_id = conn.execute("SELECT series_id FROM images GROUP BY series_id "
                             "HAVING COUNT(*) >= 3 LIMIT 1").fetchone()[0]
    first, second = (row[0] for row in conn.execute(
        "SELECT id FROM images WHERE series_id = ? ORDER BY id LIMIT 2", (series_id,)))

    def settled(last_written: str) -> str:
        conn.execute("UPDATE series SET modality = ?, dirty = 1 WHERE id = ?", (last_written, series_id))
        conn.commit()
        aggregate.update_series(conn, 64)
        return conn.execute("SELECT modality FROM series WHERE id = ?", (series_id,)).fetchone()[0]

    conn.execute("UPDATE images SET modality = 'MR' WHERE series_id = ?", (series_id,))
    conn.execute("UPDATE images SET modality = 'CT' WHERE id = ?", (first,))
    assert settled("CT") == settled("MR") == "MR"
    conn.execute("UPDATE images SET modality = NULL WHERE series_id = ? AND id NOT IN (?, ?)",
                 (series_id, first, second))
    conn.execute("UPDATE images SET modality = 'MR' WHERE id = ?", (second,))
    assert settled("MR") == settled("CT") == "CT"
    conn.close()
