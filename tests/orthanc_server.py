"""A private Orthanc (Debian's `orthanc` and `orthanc-dicomweb`) on 127.0.0.1, for the PACS tests:
its own configuration, storage and free ports in a temporary folder, a test user, and nothing
reachable from outside this machine."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import requests

USER, PASSWORD = "radsearch-test", "orthanc-test-password"
_PLUGIN_PLACES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
                  "/usr/lib/orthanc/libOrthancDicomWeb.so")


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or (Path("/usr/sbin/Orthanc").exists() and "/usr/sbin/Orthanc") \
        or None


def dicomweb_plugin() -> str | None:
    return next((place for place in _PLUGIN_PLACES if Path(place).exists()), None)


class OrthancMissing(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed here."""


def require_orthanc() -> tuple[str, str]:
    binary, plugin = orthanc_binary(), dicomweb_plugin()
    if binary is None or plugin is None:
        raise OrthancMissing("Orthanc with its DICOMweb plugin is not installed (Debian: apt-get "
                             "install orthanc orthanc-dicomweb; .ci/run installs them)")
    return binary, plugin


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OrthancServer:
    def __init__(self, folder: Path):
        self.binary, plugin = require_orthanc()
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "radsearch-test",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANCTEST",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "Plugins": [plugin],
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": {"radsearch": ["RADSEARCH", "127.0.0.1", free_port()]},
            "StorageCompression": False,
            "HttpServerEnabled": True,
        }))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"dicomweb+http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def dimse(self) -> str:
        return f"dimse://ORTHANCTEST@127.0.0.1:{self.dicom_port}"

    def start(self) -> None:
        log = open(self.folder / "orthanc.log", "ab")
        self.process = subprocess.Popen([self.binary, str(self.config)], stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.folder / "orthanc.log").read_text(errors="replace")
                raise RuntimeError(f"Orthanc exited at start: {log[-2000:]}")
            try:
                if requests.get(f"{self.url}/system", auth=(USER, PASSWORD), timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("Orthanc did not answer within 30 s")

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL) and check that it stopped."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        assert self.process.poll() is not None
        self.process = None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=15)
        self.process = None

    def upload(self, files: list[Path], *, refused_ok: bool = False) -> list[Path]:
        """Store ``files``; returns those Orthanc took (with ``refused_ok``, a file it refuses is
        left out instead of failing)."""
        taken = []
        for path in files:
            answer = requests.post(f"{self.url}/instances", data=path.read_bytes(),
                                   auth=(USER, PASSWORD), timeout=30)
            if answer.status_code == 400 and refused_ok:
                continue
            answer.raise_for_status()
            taken.append(path)
        return taken

    def delete_study(self, study_uid: str) -> None:
        answer = requests.post(f"{self.url}/tools/lookup", data=study_uid, auth=(USER, PASSWORD),
                               timeout=30)
        answer.raise_for_status()
        ids = [item["ID"] for item in answer.json() if item["Type"] == "Study"]
        assert ids, study_uid
        requests.delete(f"{self.url}/studies/{ids[0]}", auth=(USER, PASSWORD),
                        timeout=30).raise_for_status()
