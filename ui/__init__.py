"""The radsearch explorer: a Streamlit app over the Python API, served on this machine only by default."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from radsearch.optional import require

APP = Path(__file__).with_name("app.py")
DEFAULT_HOST = "127.0.0.1"  # studies are patient data: other machines only when asked (--host)
DEFAULT_PORT = 8501
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def streamlit_command(
    *,
    index: Path | None = None,
    backend: str | None = None,
    url: str | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
) -> list[str]:
    """The command that serves the explorer: no browser opened, no usage statistics sent, no file
    watcher; the app's own settings after ``--``. Python runs with ``-P``: the folder it is started
    from is not searched for modules, so a clone named ``radsearch`` there cannot stand in for the
    installed package."""
    from radsearch.index_handle import backend_spec

    backend_spec(backend, url)  # an unknown back end or a bad URL: one line now, not in the page
    if index is not None:
        index = Path(index).absolute()
    command = [
        sys.executable, "-P", "-m", "streamlit", "run", str(APP),
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
    """Serve the explorer until interrupted; returns Streamlit's exit status.

    The server runs in a process group of its own: SIGINT, SIGTERM and SIGHUP sent to this process
    are passed on to that whole group, and on Linux the server is also told to stop if this process
    dies without a chance to pass anything on (SIGKILL), so no server outlives its command."""
    require("ui")
    command = streamlit_command(index=index, backend=backend, url=url, host=host, port=port)
    server = subprocess.Popen(command, process_group=0, preexec_fn=_stop_with_parent)

    def pass_on(signum: int, _frame: object) -> None:
        _signal_group(server, signum)

    previous = {signum: signal.signal(signum, pass_on) for signum in _STOP_SIGNALS}
    try:
        status = server.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if server.poll() is None:  # this process is failing: stop the server before leaving
            _signal_group(server, signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(server, signal.SIGKILL)
                server.wait()
        _signal_group(server, signal.SIGKILL)  # anything the server started and left behind
    return 0 if status in (-signal.SIGINT, -signal.SIGTERM) else status


def _signal_group(server: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(server.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone


def _stop_with_parent() -> None:
    """In the server process before it starts: SIGTERM when its parent dies (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
