"""The radsearch explorer: a Streamlit app over the Python API, served on this machine only by default."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from radsearch.errors import RadsearchError

APP = Path(__file__).with_name("app.py")
DEFAULT_HOST = "127.0.0.1"  # studies are patient data: other machines only when asked (--host)
DEFAULT_PORT = 8501


def streamlit_command(
    *,
    index: Path | None = None,
    backend: str | None = None,
    url: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
) -> list[str]:
    """The command that serves the explorer: no browser opened, no usage statistics sent, no file
    watcher; the app's own settings after ``--``."""
    from radsearch.retrieval import backend_spec

    backend_spec(backend, url)  # an unknown back end or a bad URL: one line now, not in the page
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", host, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--global.developmentMode", "false", "--client.toolbarMode", "minimal", "--",
    ]
    for flag, value in (("--index", index), ("--backend", backend), ("--url", url)):
        if value is not None:
            command += [flag, str(value)]
    return command


def serve(
    *,
    index: Path | None = None,
    backend: str | None = None,
    url: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
) -> int:
    """Serve the explorer until interrupted; returns Streamlit's exit status."""
    if importlib.util.find_spec("streamlit") is None:
        raise RadsearchError("the explorer needs Streamlit: pip install 'radsearch[ui]'")
    command = streamlit_command(index=index, backend=backend, url=url, host=host, port=port)
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:
        return 0
