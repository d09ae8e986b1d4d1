"""The secret that keys the identifier hashes lives outside the index and the back end.

An index (or a back end's payloads and record) copied elsewhere gives up no patient ID by brute
force: every value it holds is tried as the key over the 10^4 IDs around the true 8-digit one,
and none finds it; the key file finds it. Machines of one Qdrant cluster share the key by copying
the key file; an index made when the key (the salt) was kept in the catalog moves it out.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from radsearch import keys, show
from radsearch.storage.catalog import COLLECTIONS
from radsearch.storage.backends import PointFilter, open_backend
from radsearch.errors import RadsearchError
from radsearch.indexer import index_folder
from radsearch.reading import salted_hash
from radsearch.storage.store import Store, _recorded_spec
from tests.backend_params import ALL_BACKENDS
from tests.test_index_privacy import folder_bytes

TINY = "hashing-tiny"
PATIENT_ID = "83920471"
STUDY_UID = "1.2.826.0.1.3680043.8.498.4471"


@pytest.fixture(autouse=True)
def own_key_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's keys only (the run shares one key folder otherwise)."""
    monkeypatch.setenv("RADSEARCH_KEY_DIR", str(tmp_path / "keys"))
    return tmp_path / "keys"


@pytest.fixture
def study(tmp_path: Path) -> Path:
    folder = tmp_path / "studies" / "ct"
    folder.mkdir(parents=True)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = PATIENT_ID
    ds.StudyInstanceUID = STUDY_UID
    if "IssuerOfPatientID" in ds:
        del ds.IssuerOfPatientID
    ds.save_as(folder / "0.dcm")
    return folder.parent


def _where(kind: str, tmp_path: Path) -> dict:
    return {"backend": kind, "url": str(tmp_path / "qdrant-local") if kind == "qdrant" else None}


def _strings(value: object) -> set[str]:
    """Every string (and number, as text) in a JSON-like value."""
    if isinstance(value, dict):
        return {s for k, v in value.items() for s in {k, *_strings(v)}}
    if isinstance(value, (list, tuple)):
        return {s for item in value for s in _strings(item)}
    return {str(value)} if value is not None else set()


def _what_a_copy_holds(index: Path) -> tuple[list[str], set[str], set[str]]:
    """(patient hashes, study keys, every string in the catalog's record, the back end's record
    and its payloads): all that someone holding a copy of the index and its back end sees."""
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        patients = [row[0] for row in conn.execute(
            "SELECT patient_hash FROM studies WHERE patient_hash IS NOT NULL")]
        studies = {row[0] for row in conn.execute("SELECT key FROM studies")}
        strings = {s for row in conn.execute("SELECT key, value FROM meta") for s in row}
    with Store.open_for_reading(index) as store:
        backend = store.backend
        strings |= _strings(backend.metadata())
        for name in COLLECTIONS:
            strings |= _strings([record.payload for record in
                                 backend.fetch(name, PointFilter(), max(backend.count(name), 1))])
    return patients, studies, strings


def _brute_force(patient_hash: str, candidate_keys: set[str]) -> list[str]:
    """The IDs among the 10^4 around the true one whose hash under any candidate key matches."""
    true = int(PATIENT_ID)
    return [f"{n:08d}" for key in candidate_keys for n in range(true - 5000, true + 5000)
            if salted_hash(f"{n:08d}", key) == patient_hash]


@pytest.mark.parametrize("kind", ALL_BACKENDS)
def test_a_copied_index_gives_up_no_patient_id_by_brute_force(kind, study, tmp_path, monkeypatch):
    index = tmp_path / "index"
    index_folder(study, index=index, model=TINY, workers=0, **_where(kind, tmp_path))
    key_files = list(keys.key_folder().iterdir())
    record = json.loads(json.dumps(dict(sqlite3.connect(index / "catalog.sqlite").execute(
        "SELECT key, value FROM meta").fetchall())))
    key_file = keys.key_folder() / record[keys.KEY_ID]
    assert key_file in key_files and "salt" not in record
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    # Elsewhere: the index folder copied, the back end as it is, no key.
    copy = tmp_path / "elsewhere" / "index"
    shutil.copytree(index, copy)
    monkeypatch.setenv("RADSEARCH_KEY_DIR", str(tmp_path / "no-keys-here"))
    patients, studies, strings = _what_a_copy_holds(copy)
    assert len(patients) == 1 and len(strings) > 20
    secret = key_file.read_text().strip()
    assert secret not in strings and secret.encode() not in folder_bytes(copy)
    if kind == "qdrant":
        assert secret.encode() not in folder_bytes(tmp_path / "qdrant-local")

    assert _brute_force(patients[0], strings | {""}) == []  # every value the copy holds, as key
    assert not {salted_hash(STUDY_UID, key) for key in strings} & studies
    assert _brute_force(patients[0], {secret}) == [PATIENT_ID]  # the key file finds it
    assert salted_hash(STUDY_UID, secret) in studies

    # Without the key, a lookup by UID says in one line what is missing; by file it works.
    with pytest.raises(keys.HashKeyError, match="not on this machine: copy .* RADSEARCH_KEY_FILE"):
        show(STUDY_UID, index=copy)
    assert show(str(study / "ct" / "0.dcm"), index=copy).series
    monkeypatch.setenv("RADSEARCH_KEY_FILE", str(key_file))
    assert show(STUDY_UID, index=copy).series


def test_machines_of_one_cluster_share_the_key_file(study, tmp_path, monkeypatch):
    cluster = _where("qdrant", tmp_path)
    first_keys, second_keys = tmp_path / "keys-1", tmp_path / "keys-2"
    monkeypatch.setenv("RADSEARCH_KEY_DIR", str(first_keys))
    index_folder(study, index=tmp_path / "one", model=TINY, workers=0, **cluster)
    (key_file,) = first_keys.iterdir()

    monkeypatch.setenv("RADSEARCH_KEY_DIR", str(second_keys))
    with pytest.raises(keys.HashKeyError, match=f"{key_file.name}.* is not on this machine"):
        index_folder(study, index=tmp_path / "two", model=TINY, workers=0, **cluster)
    second_keys.mkdir(exist_ok=True)
    shutil.copy2(key_file, second_keys / key_file.name)
    index_folder(study, index=tmp_path / "two", model=TINY, workers=0, **cluster)

    studies = [sqlite3.connect(tmp_path / name / "catalog.sqlite").execute(
        "SELECT key FROM studies").fetchall() for name in ("one", "two")]
    assert studies[0] == studies[1]  # one key: the same study keys on both machines
    assert sorted(p.name for p in second_keys.iterdir()) == [key_file.name]


def test_the_key_can_come_from_the_environment(study, tmp_path, monkeypatch):
    monkeypatch.setenv("RADSEARCH_KEY", "k" * 12)
    with pytest.raises(keys.HashKeyError, match="at least 32 characters"):
        index_folder(study, index=tmp_path / "index", model=TINY, workers=0)
    monkeypatch.setenv("RADSEARCH_KEY", "0123456789abcdef" * 4)
    index_folder(study, index=tmp_path / "index", model=TINY, workers=0)
    assert not keys.key_folder().exists() or not any(keys.key_folder().iterdir())
    assert show(STUDY_UID, index=tmp_path / "index").series

    monkeypatch.setenv("RADSEARCH_KEY", "fedcba9876543210" * 4)
    with pytest.raises(keys.HashKeyError, match="not the key of this index"):
        show(STUDY_UID, index=tmp_path / "index")


def test_a_key_file_others_can_read_is_refused(study, tmp_path):
    index_folder(study, index=tmp_path / "index", model=TINY, workers=0)
    (key_file,) = keys.key_folder().iterdir()
    os.chmod(key_file, 0o644)
    with pytest.raises(RadsearchError, match="chmod 600"):
        show(STUDY_UID, index=tmp_path / "index")


@pytest.mark.parametrize("kind", ALL_BACKENDS)
def test_an_index_with_its_salt_in_the_catalog_moves_it_out(kind, study, tmp_path):
    """An index made when the key (the salt) was kept in the catalog and the back end's record
    keeps working; its next `index` run moves the salt into a key file and out of the index."""
    index = tmp_path / "index"
    index_folder(study, index=index, model=TINY, workers=0, **_where(kind, tmp_path))
    (key_file,) = keys.key_folder().iterdir()
    salt = key_file.read_text().strip()
    with sqlite3.connect(index / "catalog.sqlite") as conn:  # as an older radsearch left it
        conn.execute("DELETE FROM meta WHERE key IN (?, ?)", (keys.KEY_ID, keys.KEY_CHECK))
        conn.execute("INSERT INTO meta(key, value) VALUES ('salt', ?)", (salt,))
    with _backend_writer(index) as backend:
        backend.update_record({"salt": salt, keys.KEY_ID: None, keys.KEY_CHECK: None})
    key_file.unlink()

    assert show(STUDY_UID, index=index).series  # still answers, from the catalog's salt

    summary = index_folder(study, index=index, model=TINY, workers=0)
    assert summary.unchanged == 1 and summary.indexed == 0  # nothing hashed again
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert "salt" not in meta
    assert (keys.key_folder() / meta[keys.KEY_ID]).read_text().strip() == salt
    with Store.open_for_reading(index) as store:
        assert "salt" not in (store.backend.metadata() or {})
    assert salt.encode() not in folder_bytes(index)
    if kind == "qdrant":  # the cluster's record keeps a removed key as null
        assert salt.encode() not in folder_bytes(tmp_path / "qdrant-local")
    assert show(STUDY_UID, index=index).series


def _backend_writer(index: Path) -> closing:
    """The index's back end, opened for writing by itself (to age its record)."""
    with sqlite3.connect(index / "catalog.sqlite") as conn:
        spec = _recorded_spec(conn)
        name = conn.execute("SELECT value FROM meta WHERE key = 'model.name'").fetchone()[0]
    return closing(open_backend(spec, index, vector_name=name, read_only=False))
