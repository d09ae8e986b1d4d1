"""Safe defaults: a secret from the environment is never shown; a checkpoint never runs code;
nothing listens on a port unless on 127.0.0.1; a decoder panic fails one file, not the run; a
hostile header cannot make shard placement allocate more than the file holds."""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc
import traceback
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from reading_helpers import huge_element_length
from test_hostile_inputs import deflate_bomb
from typer.testing import CliRunner

from radsearch.cli import app
from radsearch.indexer import index_folder
from radsearch.indexer import worker
from radsearch.indexer.discover import _study_uid
from radsearch.indexer.worker import ReadTask, read_one

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = [REPO / name for name in ("radsearch", "indexer", "training", "ui")
                if (REPO / name).is_dir()]
SECRET = "rs-env-key-5c02e9d7b1a4"
TINY = "hashing-tiny"


def _package_sources() -> list[tuple[Path, str]]:
    return [(path, path.read_text(encoding="utf-8"))
            for folder in PACKAGE_DIRS for path in sorted(folder.rglob("*.py"))]


def _one_dicom_folder(root: Path) -> Path:
    folder = root / "studies"
    folder.mkdir(parents=True)
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "ct.dcm")
    return folder


# --- secrets ------------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("qdrant_client") is None,
                    reason="qdrant-client is not installed")
def test_the_qdrant_api_key_from_the_environment_is_never_shown(
    tmp_path: Path, monkeypatch, capfd, caplog
):
    """Not in any output, error, traceback or log line, nor in the index, even when the server
    cannot be reached (nothing listens on port 9) or the URL carries credentials."""
    monkeypatch.setenv("RADSEARCH_QDRANT_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    folder = _one_dicom_folder(tmp_path)
    index = tmp_path / "index"
    unreachable = ["index", str(folder), "--index", str(index), "--model", TINY, "--workers", "0",
                   "--backend", "qdrant", "--url", "http://127.0.0.1:9",
                   "--backend-opt", "retries=1", "--backend-opt", "timeout=2"]
    runs = [
        unreachable,
        ["search", "chest", "--index", str(index)],  # the recorded back end: unreachable too
        [*unreachable[:-6], "--backend", "qdrant", "--url",
         f"https://admin:{SECRET}@qdrant.example.org:6333"],
    ]
    seen = []
    for args in runs:
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0, args  # each fails ...
        seen += [result.output, repr(result.exception),
                 "".join(traceback.format_exception(result.exception))]
    # ... and so does the real command line, whose error line and exit code the user sees.
    command = subprocess.run([sys.executable, "-m", "radsearch", *unreachable], text=True,
                             capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                             timeout=120)
    assert command.returncode != 0
    seen += [command.stdout, command.stderr]
    captured = capfd.readouterr()
    seen += [caplog.text, captured.out, captured.err]
    index_files = b"".join(p.read_bytes() for p in index.rglob("*") if p.is_file())

    assert "Connection refused" in "".join(seen)  # the failure itself is reported
    assert SECRET not in "".join(seen)
    assert SECRET.encode() not in index_files


# --- checkpoints ----------------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs os.mkdir(marker): the footprint of code run from a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.fixture
def malicious_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A torch checkpoint whose unpickling runs code, and the marker that code would create."""
    torch = pytest.importorskip("torch")
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "hook": _Payload(marker)}, path)
    torch.load(path, weights_only=False)  # the payload is live: an unsafe load runs it
    assert marker.is_dir()
    marker.rmdir()
    return path, marker


def test_a_malicious_pickle_checkpoint_is_refused_without_running_it(malicious_checkpoint):
    from radsearch.encoders._hf_clip import read_state_dict
    from radsearch.encoders._radclip_weights import load_weights
    from radsearch.errors import RadsearchError

    path, marker = malicious_checkpoint
    with pytest.raises(RadsearchError, match="refusing to unpickle code"):
        read_state_dict(path)  # hf-clip weights (RadCLIP's pytorch_model.bin form)
    renamed = path.with_suffix(".safetensors")
    shutil.copy(path, renamed)
    with pytest.raises(Exception, match="(?i)header|safetensor"):
        load_weights(renamed)  # radsearch checkpoints and shipped weights: safetensors only
    assert not marker.exists()


def test_an_open_clip_checkpoint_is_loaded_without_running_code(malicious_checkpoint, tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from radsearch.encoders import create_model
    from radsearch.errors import RadsearchError

    arch = "radsearch-safety-tiny-vit"
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                       "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1},
    }
    (tmp_path / f"{arch}.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / f"{arch}.json")
    path, marker = malicious_checkpoint
    with pytest.raises(RadsearchError, match="open_clip could not load it"):
        create_model(f"open_clip:{arch}@{path}")
    assert not marker.exists()


_CODE_LOADERS = {("pickle", "load"), ("pickle", "loads"), ("dill", "load"), ("dill", "loads"),
                 ("joblib", "load"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
                 ("jit", "load"), ("marshal", "loads")}


def test_no_checkpoint_loader_can_unpickle_code():
    """Every torch.load in the package passes weights_only=True; nothing else unpickles."""
    unsafe = []
    for path, source in _package_sources():
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            call = (owner_name, node.func.attr)
            keywords = {k.arg: k.value for k in node.keywords}
            safe_torch = isinstance(keywords.get("weights_only"), ast.Constant) and \
                keywords["weights_only"].value is True
            pickled_numpy = isinstance(keywords.get("allow_pickle"), ast.Constant) and \
                keywords["allow_pickle"].value is True
            if (call == ("torch", "load") and not safe_torch) or call in _CODE_LOADERS or (
                    call == ("np", "load") and pickled_numpy):
                unsafe.append(f"{path.relative_to(REPO)}:{node.lineno} {'.'.join(call)}")
    assert unsafe == []


# --- nothing listens ------------------------------------------------------------------------------

# The explorer's pages (ui/*, imported as radsearch.ui) are served by its launcher (ui/__init__.py: `serve`) and
# never bind themselves: the launcher must name the address.
_LAUNCHER = "__init__.py"
_SERVER_MODULES = {"socketserver", "http.server", "wsgiref.simple_server", "xmlrpc.server",
                   "multiprocessing.connection", "uvicorn", "flask", "fastapi", "aiohttp",
                   "tornado", "streamlit", "gradio", "bottle"}


def test_anything_that_listens_binds_to_localhost_by_default():
    """No module of the package binds to every interface; one that imports a server library or
    listens on a socket must name 127.0.0.1 as its default address (the explorer's launcher does:
    tests/test_ui.py checks the address it passes to Streamlit)."""
    listeners, everywhere = [], []
    for path, source in _package_sources():
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            listens = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in ("listen", "serve_forever", "start_server", "create_server")
            if listens or any(name.split(".")[0] in _SERVER_MODULES or name in _SERVER_MODULES
                              for name in names):
                listeners.append(path.with_name(_LAUNCHER) if path.parent.name == "ui" else path)
        if "0.0.0.0" in source or "'::'" in source or '"::"' in source:
            everywhere.append(path)
    assert everywhere == []
    assert sorted({p for p in listeners if "127.0.0.1" not in p.read_text(encoding="utf-8")}) == []


# --- a decoder panic fails one file ---------------------------------------------------------------


class PanicException(BaseException):
    """Like pyo3's PanicException, which a Rust decoder raises on bad input: not an Exception."""


def _panicking_folder(root: Path) -> Path:
    folder = root / "studies"
    folder.mkdir(parents=True)
    for name, source in (("a.dcm", "CT_small.dcm"), ("panic.dcm", "MR_small.dcm"),
                         ("z.dcm", "JPEG2000.dcm")):
        shutil.copy(get_testdata_file(source), folder / name)
    return folder


PANIC = "called `Option::unwrap()` on a `None` value"
_PANIC_SITE = f'''
import radsearch.reading as reading

class PanicException(BaseException):
    pass

_read_file = reading.read_file

def read_file(path, **kwargs):
    if path.name == "panic.dcm":
        raise PanicException({PANIC!r})
    return _read_file(path, **kwargs)

reading.read_file = read_file
'''


def test_a_decoder_panic_fails_one_file_and_the_run_goes_on(tmp_path: Path, monkeypatch):
    folder = _panicking_folder(tmp_path)
    real_read = worker.read_file

    def read_file(path, **kwargs):
        if path.name == "panic.dcm":
            raise PanicException(PANIC)
        return real_read(path, **kwargs)

    monkeypatch.setattr(worker, "read_file", read_file)

    summary = index_folder(folder, index=tmp_path / "index", model=TINY, workers=0)

    assert summary.failures == [(str(folder / "panic.dcm"), f"unexpected PanicException: {PANIC}")]
    assert (summary.indexed, summary.failed) == (2, 1)


def test_a_decoder_panic_in_a_worker_process_fails_one_file(tmp_path: Path, monkeypatch):
    """The same through a real worker process: the panic is planted there at start-up (a
    sitecustomize module on its PYTHONPATH), so the pool, not the test, calls the reader."""
    folder = _panicking_folder(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_PANIC_SITE, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(site))

    summary = index_folder(folder, index=tmp_path / "index", model=TINY, workers=1)

    assert summary.failures == [(str(folder / "panic.dcm"), f"unexpected PanicException: {PANIC}")]
    assert (summary.indexed, summary.failed) == (2, 1)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_still_stops_the_worker(tmp_path: Path, monkeypatch, stop):
    path = _one_dicom_folder(tmp_path) / "ct.dcm"

    def read_file(path, **kwargs):
        raise stop()

    monkeypatch.setattr(worker, "read_file", read_file)
    with pytest.raises(stop):
        read_one(ReadTask(str(path), None, 64, "salt"))


# --- shard placement reads a hostile header within bounds ----------------------------------------


def _huge_text_early() -> bytes:
    """CT_small with a text element declaring 4 GB inside an undefined-length sequence placed
    before the Study Instance UID (pydicom reads such a value whole, at once)."""
    data = huge_element_length("CT_small.dcm", "ReferencedStudySequence")
    at = data.find(struct.pack("<HH", 0x0040, 0xA160) + b"UT")
    assert 0 < at < data.find(struct.pack("<HH", 0x0020, 0x000D))
    return data


def _dicom_uid(name: str) -> str:
    return pydicom.dcmread(get_testdata_file(name)).StudyInstanceUID


# name -> (the file, the Study Instance UID to find in it: None where the file hides it).
HOSTILE_HEADERS = {
    "4 GB element after the UID": lambda: (huge_element_length(), _dicom_uid("MR_small.dcm")),
    "4 GB element before the UID": lambda: (_huge_text_early(), None),
    "deflate bomb (300 MB)": lambda: (deflate_bomb(300 * 2**20), _dicom_uid("image_dfl.dcm")),
}


@pytest.mark.parametrize("name", list(HOSTILE_HEADERS))
def test_shard_placement_reads_a_hostile_header_within_bounds(tmp_path: Path, name: str):
    data, uid = HOSTILE_HEADERS[name]()
    path = tmp_path / "hostile.dcm"
    path.write_bytes(data)
    _study_uid.cache_clear()
    tracemalloc.start()
    try:
        found = _study_uid(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{name}: peak {peak / 2**20:.0f} MiB for a {len(data)} B file"
    assert found == uid
