"""radclip-mini's text tower off sentence-transformers: the plain torch graph, its ONNX export and cache.

Every path must give the vectors sentence-transformers gives; the export is a cache that is checked,
reused, rebuilt when damaged, and never needed for correctness.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from radsearch.encoders import _minilm, _text_runtime
from radsearch.encoders._minilm_graph import SentenceGraph
from radsearch.encoders.radclip_mini import RadClipMini

TEXTS = [
    "Left lower lobe pneumonia.",
    "",
    "   Mixed CASE,   extra  spaces\tand a tab   ",
    "Émigré naïve façade; 肺炎 (pneumonia) — 3.5 cm mass",
    "word " * 400,  # longer than the 256-token limit: truncated like sentence-transformers does
    "no acute cardiopulmonary abnormality",
]

needs_onnx = pytest.mark.skipif(not _text_runtime.onnx_installed(),
                                reason="onnxruntime/onnx not installed (pip install -e '.[onnx]')")


@pytest.fixture(scope="module")
def reference() -> RadClipMini:
    """The sentence-transformers pipeline itself, which every path must reproduce."""
    return RadClipMini()


@pytest.fixture(scope="module")
def expected(reference: RadClipMini) -> np.ndarray:
    return reference.text_tower.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)


def test_tokenizer_matches_sentence_transformers(reference: RadClipMini) -> None:
    ids, mask = _minilm.tokenize(_minilm.tokenizer(), TEXTS)
    features = reference.text_tower.preprocess(TEXTS)
    np.testing.assert_array_equal(ids, features["input_ids"].numpy())
    np.testing.assert_array_equal(mask, features["attention_mask"].numpy())
    assert ids.shape[1] == 256


def test_torch_graph_matches_sentence_transformers(reference: RadClipMini, expected: np.ndarray) -> None:
    graph = SentenceGraph(reference.text_tower)
    tok = _minilm.tokenizer()
    together = _text_runtime.TorchRunner(graph)(*_minilm.tokenize(tok, TEXTS))
    np.testing.assert_allclose(together, expected, atol=1e-6)
    # Alone (no padding) and padded in a batch: the same vector.
    alone = np.stack([_text_runtime.TorchRunner(graph)(*_minilm.tokenize(tok, [t]))[0] for t in TEXTS])
    np.testing.assert_allclose(alone, together, atol=1e-6)


def test_graph_refuses_a_pipeline_it_does_not_reproduce(reference: RadClipMini) -> None:
    class Pooling:  # named like the module it stands for: only its mode differs
        def get_config_dict(self) -> dict:
            return {"pooling_mode": "cls"}

    modules = list(reference.text_tower)
    fake = [modules[0], Pooling(), modules[2]]
    with pytest.raises(ValueError, match="expected mean pooling"):
        SentenceGraph(fake)


@pytest.mark.parametrize("runtime", ["torch", pytest.param("onnx", marks=needs_onnx)])
def test_each_runtime_encodes_like_sentence_transformers(
    runtime: str, expected: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_text_runtime.RUNTIME_ENV, runtime)
    encoder = RadClipMini()
    np.testing.assert_allclose(encoder.text_features(TEXTS), expected, atol=1e-6)
    wanted = _text_runtime.OnnxRunner if runtime == "onnx" else _text_runtime.TorchRunner
    assert isinstance(encoder._text_runner, wanted)


@needs_onnx
def test_export_is_cached_and_reused_without_loading_the_torch_tower(
    tmp_path, expected: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_text_runtime.CACHE_ENV, str(tmp_path))
    first = RadClipMini()
    first.text_features(TEXTS[:1])
    exported = sorted((tmp_path / "text-graphs").iterdir())
    assert [p.suffix for p in exported] == [".onnx"]  # one file, no temporary left behind
    stamp = exported[0].stat().st_mtime_ns

    second = RadClipMini()
    np.testing.assert_allclose(second.text_features(TEXTS), expected, atol=1e-6)
    assert second._text_tower is None  # sentence-transformers never loaded
    assert exported[0].stat().st_mtime_ns == stamp


@needs_onnx
def test_a_damaged_cache_file_is_rebuilt(
    tmp_path, expected: np.ndarray, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(_text_runtime.CACHE_ENV, str(tmp_path))
    RadClipMini().text_features(TEXTS[:1])
    (path,) = (tmp_path / "text-graphs").iterdir()
    path.write_bytes(path.read_bytes()[:4096])  # a copy cut short (disk full, killed writer)

    with caplog.at_level(logging.WARNING):
        encoder = RadClipMini()
        vectors = encoder.text_features(TEXTS)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    assert isinstance(encoder._text_runner, _text_runtime.OnnxRunner)
    assert any("unreadable" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    assert path.stat().st_size > 10_000_000


@needs_onnx
def test_an_export_that_differs_from_torch_is_not_used(
    tmp_path, expected: np.ndarray, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(_text_runtime.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(_text_runtime, "EXPORT_TOLERANCE", -1.0)  # no export can pass
    with caplog.at_level(logging.WARNING):
        encoder = RadClipMini()
        np.testing.assert_allclose(encoder.text_features(TEXTS), expected, atol=1e-6)
    assert isinstance(encoder._text_runner, _text_runtime.TorchRunner)
    assert any("differs from torch" in r.getMessage() for r in caplog.records)
    assert not any((tmp_path / "text-graphs").iterdir())  # nothing published, no temporary left

    monkeypatch.setenv(_text_runtime.RUNTIME_ENV, "onnx")  # asked for explicitly: an error instead
    with pytest.raises(ValueError, match="differs from torch"):
        RadClipMini().text_features(TEXTS[:1])


def test_onnx_required_but_missing_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_text_runtime.RUNTIME_ENV, "onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.setattr(_text_runtime, "onnx_installed", lambda: False)
    with pytest.raises(RuntimeError, match=r"needs onnxruntime: pip install 'radsearch\[onnx\]'"):
        RadClipMini().text_features(["x"])


def test_without_onnx_the_torch_graph_runs(expected: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_text_runtime, "onnx_installed", lambda: False)
    encoder = RadClipMini()
    np.testing.assert_allclose(encoder.text_features(TEXTS), expected, atol=1e-6)
    assert isinstance(encoder._text_runner, _text_runtime.TorchRunner)


def test_the_runtime_argument_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_text_runtime.RUNTIME_ENV, "onnx")
    encoder = RadClipMini(text_runtime="torch")
    encoder.text_features(["x"])
    assert isinstance(encoder._text_runner, _text_runtime.TorchRunner)
    with pytest.raises(ValueError, match="text runtime 'gpu': expected one of auto, onnx, torch"):
        RadClipMini(text_runtime="gpu").text_features(["x"])


def test_unknown_runtime_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_text_runtime.RUNTIME_ENV, "tensorrt")
    with pytest.raises(ValueError, match="RADSEARCH_TEXT_RUNTIME='tensorrt': expected one of auto, onnx, torch"):
        RadClipMini().text_features(["x"])


def test_shipped_text_deltas_change_the_export_key() -> None:
    base = RadClipMini(untrained=True)
    changed = RadClipMini(untrained=True)
    changed._weights.text_tower["encoder.layer.5.output.dense.bias"] = torch.ones(384)
    assert base._text_graph_key() != changed._text_graph_key()
    assert base._text_graph_key() == RadClipMini(untrained=True)._text_graph_key()


def test_batches_keep_the_callers_order(reference: RadClipMini, expected: np.ndarray) -> None:
    many = TEXTS * 30  # more than one batch, lengths interleaved
    np.testing.assert_allclose(reference.text_features(many), np.tile(expected, (30, 1)), atol=1e-6)
