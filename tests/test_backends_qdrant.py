"""The Qdrant server back end's own duties: retries with back-off on transient errors only, and an
API key that is never shown, stored or logged."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest

from radsearch.storage.backends import BackendSpec, Point
from radsearch.storage.payloads import point_id
from radsearch.errors import RadsearchError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("qdrant_client") is None,
                                reason="qdrant-client is not installed")
SECRET = "rs-test-key-8f3a71c0d9"


def _backend(sleeps: list, url: str = ":memory:", **options):
    from radsearch.storage.backends.qdrant_backend import QdrantBackend

    return QdrantBackend(url, vector_name="m", options={"retries": 3, **options},
                         sleep=sleeps.append)


def test_transient_errors_are_retried_with_growing_waits():
    from qdrant_client.http.exceptions import ResponseHandlingException

    sleeps: list[float] = []
    backend = _backend(sleeps, batch_size=2)
    backend.create_collection("images", 4)
    real_upsert, failures = backend.client.upsert, []

    def flaky(*args, **kwargs):
        if len(failures) < 2:
            failures.append(1)
            raise ResponseHandlingException(TimeoutError("read timed out"))
        return real_upsert(*args, **kwargs)

    backend.client.upsert = flaky
    points = [Point(point_id("t", i), np.eye(4, dtype=np.float32)[i], {"study": "s"})
              for i in range(4)]
    backend.upsert("images", points)
    assert backend.count("images") == 4
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] > 0


def test_other_errors_are_not_retried():
    from qdrant_client.http.exceptions import UnexpectedResponse

    sleeps: list[float] = []
    backend = _backend(sleeps)
    backend.create_collection("images", 4)

    def refused(*args, **kwargs):
        raise UnexpectedResponse(400, "Bad Request", b'{"status":{"error":"wrong"}}', None)

    backend.client.upsert = refused
    with pytest.raises(UnexpectedResponse):
        backend.upsert("images", [Point(point_id("t", 0), np.ones(4, np.float32), {})])
    assert sleeps == []


def test_the_api_key_is_never_shown(monkeypatch, caplog):
    monkeypatch.setenv("RADSEARCH_QDRANT_API_KEY", SECRET)
    sleeps: list[float] = []
    backend = _backend(sleeps, url="http://127.0.0.1:9")  # nothing listens: connection refused
    with caplog.at_level(logging.DEBUG), pytest.raises(RadsearchError) as failure:
        backend.create_collection("images", 4)
    assert len(sleeps) == 3  # unreachable is transient: retried, then reported in one line
    assert str(failure.value).startswith("Qdrant at http://127.0.0.1:9: no answer after 4 tries")
    assert SECRET not in str(failure.value) and SECRET not in repr(failure.value)
    assert SECRET not in caplog.text
    spec = BackendSpec("qdrant", "https://qdrant.example.org:6333", {"shard_number": 3})
    assert SECRET not in str(spec.to_record()) and "example.org" in spec.describe()


def test_credentials_in_the_url_are_refused():
    from radsearch.errors import RadsearchError

    with pytest.raises(RadsearchError, match="RADSEARCH_QDRANT_API_KEY"):
        BackendSpec("qdrant", f"https://admin:{SECRET}@qdrant.example.org:6333")
