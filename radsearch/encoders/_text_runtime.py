"""Where radclip-mini's text graph runs: ONNX Runtime when installed (the ``onnx`` extra), else torch.

One query sentence takes 4.3 ms on ONNX Runtime and 9.7 ms on torch (one thread, this machine), and
a text search at 1M vectors has 20 ms in all. The exported graph is a derived cache: keyed by the
tower's weights and the graph version, exported once, compared with torch on probe sentences before
it is kept, written by atomic rename, and rebuilt when it cannot be read. With it cached, a process
needs neither transformers nor sentence-transformers to encode text.

``RADSEARCH_TEXT_RUNTIME``: ``auto`` (default: ONNX Runtime if installed), ``onnx`` (required),
``torch``. ``RADSEARCH_CACHE``: the cache folder (default ``$XDG_CACHE_HOME/radsearch`` or
``~/.cache/radsearch``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radsearch.optional import feature, is_available

if TYPE_CHECKING:
    import torch

RUNTIME_ENV = "RADSEARCH_TEXT_RUNTIME"
CACHE_ENV = "RADSEARCH_CACHE"
RUNTIMES = ("auto", "onnx", "torch")
# An export is kept only if it reproduces torch this closely (float32 rounding is ~1e-7).
EXPORT_TOLERANCE = 1e-5
_OPSET = 17

log = logging.getLogger(__name__)

TextRunner = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""int64 ``(input_ids, attention_mask)`` -> float32 unit vectors."""


def requested_runtime(chosen: str | None = None) -> str:
    """``chosen`` if given, else ``$RADSEARCH_TEXT_RUNTIME``, else ``auto``."""
    if chosen is not None:
        if chosen not in RUNTIMES:
            raise ValueError(f"text runtime {chosen!r}: expected one of {', '.join(RUNTIMES)}")
        return chosen
    value = os.environ.get(RUNTIME_ENV, "auto").strip().lower() or "auto"
    if value not in RUNTIMES:
        raise ValueError(f"{RUNTIME_ENV}={value!r}: expected one of {', '.join(RUNTIMES)}")
    return value


def onnx_installed() -> bool:
    """ONNX Runtime runs the graph; the onnx package is what torch's exporter writes it with."""
    return is_available("onnx")


def onnx_wanted(runtime: str, device: str) -> bool:
    """Whether the graph should run on ONNX Runtime (CPU only); an error if ``onnx`` was required
    and cannot be had."""
    if runtime == "onnx" and device != "cpu":
        raise RuntimeError(f"{RUNTIME_ENV}=onnx runs on the CPU, not {device}")
    wanted = runtime != "torch" and device == "cpu" and onnx_installed()
    if runtime == "onnx" and not wanted:
        raise RuntimeError(f"{RUNTIME_ENV}=onnx: {feature('onnx').message()}")
    return wanted


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "radsearch"


def exported_path(key: str) -> Path:
    return cache_dir() / "text-graphs" / f"{key}.onnx"


class TorchRunner:
    def __init__(self, graph: torch.nn.Module) -> None:
        self.graph = graph

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        device = self.graph.word_embeddings.device
        with torch.inference_mode():
            vectors = self.graph(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
            return vectors.float().cpu().numpy()


class OnnxRunner:
    def __init__(self, path: Path) -> None:
        import onnxruntime
        import torch

        options = onnxruntime.SessionOptions()
        # As many threads as torch is allowed (benchmarks and servers pin it), and no threads
        # spinning while idle: on a shared 2-core machine spinning costs more than it saves.
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: nothing on the user's stderr per session
        self.path = path
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def cached_onnx(key: str) -> OnnxRunner | None:
    """The exported graph for ``key`` if it is cached and loads; an unreadable copy is removed."""
    path = exported_path(key)
    if not path.is_file():
        return None
    try:
        return OnnxRunner(path)
    except Exception as error:  # a truncated or foreign file: export again
        log.warning("%s: cached text graph unreadable (%s); exporting it again", path, first_line(error))
        path.unlink(missing_ok=True)
        return None


def export_onnx(graph: torch.nn.Module, key: str, probe: tuple[np.ndarray, np.ndarray]) -> OnnxRunner:
    """Export ``graph``, check it against torch on ``probe``, then publish it under ``key``."""
    import torch

    path = exported_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".onnx")
    os.close(descriptor)
    try:
        ids, mask = (torch.from_numpy(a) for a in probe)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the exporter's deprecation notices are not the user's
            torch.onnx.export(
                graph, (ids, mask), temporary, dynamo=False, opset_version=_OPSET,
                input_names=["input_ids", "attention_mask"], output_names=["embeddings"],
                dynamic_axes={"input_ids": {0: "texts", 1: "tokens"},
                              "attention_mask": {0: "texts", 1: "tokens"}},
            )
        runner = OnnxRunner(Path(temporary))
        difference = float(np.abs(runner(*probe) - TorchRunner(graph)(*probe)).max())
        if not difference <= EXPORT_TOLERANCE:
            raise ValueError(f"exported text graph differs from torch by {difference:.2g}")
        os.replace(temporary, path)
        runner.path = path
        return runner
    finally:
        Path(temporary).unlink(missing_ok=True)


def export_or_torch(graph: torch.nn.Module, key: str, probe: tuple[np.ndarray, np.ndarray], *,
                    required: bool) -> TextRunner:
    """The exported graph; if the export fails, the torch graph (only speed is lost: it computes
    the same vectors) with one warning, or the error when ONNX Runtime was ``required``."""
    try:
        return export_onnx(graph, key, probe)
    except Exception as error:
        if required:
            raise
        log.warning("text tower: ONNX export failed (%s); running it on torch", first_line(error))
        return TorchRunner(graph)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
