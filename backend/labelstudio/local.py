"""A local Label Studio 1.23.2 (for ``vrshq studio`` and the tests): start, stop, and its REST API.

Label Studio lives in its own venv, ``.venv-ls`` at the repo root (its pins conflict with
ours), made by ``bash scripts/setup_labelstudio.sh``. The server runs with SQLite in a data
dir, listens on 127.0.0.1 only, serves local files from ``doc_root`` and lets an ML backend on
127.0.0.1 be connected (its SSRF guards are off: fine on one machine, not for a shared
deployment). The pytest fixtures are in ``tests/ls_fixtures.py``.

Facts checked on 1.23.2 that the code below relies on:

* ``label-studio --version`` does not just print: it goes on to migrate a database in the
  user's data dir and start a server on port 8080. Never call it to probe the install.
* ``--host`` is only the public URL; ``--internal-host`` is the address it binds to.
* If the port is taken it silently moves to the next free one, so the port is chosen here
  just before start and ``/health`` is polled on it (a server elsewhere would not answer
  with our token: :meth:`LabelStudioServer.wait_ready` checks the token too).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from vrshq.backend.labelstudio.api import LabelStudioAPI
from vrshq.errors import VrshqError

REPO_ROOT = Path(__file__).resolve().parents[2]  # backend/labelstudio/local.py in a source tree
LS_BIN = REPO_ROOT / ".venv-ls" / "bin" / "label-studio"
SETUP_HINT = "run `bash scripts/setup_labelstudio.sh` at the repo root"


class LabelStudioError(VrshqError):
    """Label Studio did not start, died, or answered an API call with an error."""


def find_label_studio(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The label-studio executable: ``explicit``, $VRSHQ_LABEL_STUDIO, .venv-ls, or on PATH."""
    candidates = [explicit, os.environ.get("VRSHQ_LABEL_STUDIO") or None]
    for candidate in candidates:
        if candidate:
            path = Path(candidate)
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise LabelStudioError(f"{path}: not an executable label-studio")
            return path
    if LS_BIN.exists():
        return LS_BIN
    found = shutil.which("label-studio")
    if found:
        return Path(found)
    raise LabelStudioError(f"Label Studio is not installed ({LS_BIN} is missing); {SETUP_HINT}")


def port_in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def quiet_env() -> dict[str, str]:
    """Env that keeps Label Studio offline and quiet (no Sentry, no analytics, no PyPI check)."""
    return {
        # settings/label_studio.py defaults both DSNs to HumanSignal's Sentry; "" turns them off
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LABEL_STUDIO_SENTRY_DSN": "",
        "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
        # core/utils/common.py asks PyPI for the latest version while settings load
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        # the frontend's usage metrics (templates/base.html, core/utils/contextlog.py)
        "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_FEATURE_FLAGS_OFFLINE": "true",
        "LABEL_STUDIO_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


class LabelStudioServer:
    """One Label Studio process: ``start()``, ``wait_ready()``, ``stop()`` (or use it as a context manager).

    Attributes: ``url`` (``http://127.0.0.1:PORT``), ``token`` (legacy API token, header
    ``Authorization: Token <token>``), ``username`` (an email, also the login), ``password``,
    ``doc_root`` (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``: a local-files storage path must be
    a strict subdirectory of it), ``data_dir`` and ``log_path`` (its stdout and stderr).
    """

    def __init__(
        self,
        doc_root: str | os.PathLike[str],
        data_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        username: str = "tester@vrshq.test",
        password: str | None = None,
        token: str | None = None,
        log_path: str | os.PathLike[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        executable: str | os.PathLike[str] | None = None,
        fixed_port: bool = False,
    ) -> None:
        self.executable = find_label_studio(executable)
        # Label Studio silently moves to the next free port when its port is taken.
        self.fixed_port = fixed_port
        self.doc_root = Path(doc_root).resolve()
        self.doc_root.mkdir(parents=True, exist_ok=True)
        self._own_data_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="ls-data-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = username
        self.password = password or "pw-" + secrets.token_hex(8)
        # Label Studio applies --user-token only when it is longer than 5 characters
        self.token = token or secrets.token_hex(20)
        self.log_path = Path(log_path) if log_path is not None else self.data_dir / "label-studio.log"
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    # --- process ------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            str(self.executable),
            "start",
            "--no-browser",
            "--data-dir", str(self.data_dir),
            # "--opt=value": a generated password may start with "-", which argparse would
            # take for an option in "--password -x..."
            f"--username={self.username}",
            f"--password={self.password}",
            f"--user-token={self.token}",
            "--enable-legacy-api-token",
            "--internal-host", "127.0.0.1",
            "--port", str(self.port),
            "--host", self.url,
            "--log-level", "WARNING",
        ]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "HEARTEX_"))}
        # keep any outer Django setup away from the subprocess
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.pop("VIRTUAL_ENV", None)
        env.update(quiet_env())
        env.update(
            {
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
                "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
                "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.doc_root),
                # Label Studio gives a backend 1 s to answer /health and 3 s for /setup, and
                # hides its predictions while it counts as disconnected; a CPU-only backend
                # busy with a job can miss that.
                "ML_TIMEOUT_HEALTH": "10",
                "ML_TIMEOUT_SETUP": "15",
                # the browser runs on the same host; keep timeouts explicit
                "LABEL_STUDIO_HOST": self.url,
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> LabelStudioServer:
        if self.proc is not None:
            raise LabelStudioError("this LabelStudioServer was already started")
        if self.fixed_port and port_in_use(self.port):
            raise LabelStudioError(f"port {self.port} is in use (another Label Studio?); pick another")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the process)
        self.proc = subprocess.Popen(
            self.command(),
            cwd=str(self.data_dir),  # no mydata/ or label-studio-data/ here to auto-configure
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as a whole
        )
        return self

    def log_tail(self, chars: int = 4000) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return text[-chars:]

    def wait_ready(self, timeout: float = 180.0) -> LabelStudioServer:
        """Poll ``/health`` until it answers, then check the API token; fail with the log tail."""
        if self.proc is None:
            raise LabelStudioError("start() the server first")
        deadline = time.monotonic() + timeout
        session = requests.Session()
        session.trust_env = False  # never a proxy for 127.0.0.1
        while True:
            code = self.proc.poll()
            if code is not None:
                raise LabelStudioError(
                    f"Label Studio exited with code {code} before it was ready; log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                r = session.get(self.url + "/health", timeout=2)
                if r.status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise LabelStudioError(
                    f"Label Studio did not answer {self.url}/health within {timeout:.0f} s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.5)
        r = session.get(self.url + "/api/projects/", headers={"Authorization": f"Token {self.token}"}, timeout=30)
        if r.status_code != 200:
            raise LabelStudioError(
                f"Label Studio at {self.url} is up but refuses the token: {r.status_code} {r.text[:500]}\n{self.log_tail()}"
            )
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate the whole process group, then kill it if it lingers."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=timeout)
        elif proc is not None:
            # the leader is gone; children it left in its group must go too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def cleanup(self) -> None:
        """stop(), then remove the data dir when this object made it."""
        self.stop()
        if self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def api(self) -> LabelStudioAPI:
        return LabelStudioAPI(self.url, self.token)

    def __enter__(self) -> LabelStudioServer:  # noqa: PYI034
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["LabelStudioAPI", "LabelStudioError", "LabelStudioServer", "find_label_studio",
           "free_port", "port_in_use", "quiet_env"]
