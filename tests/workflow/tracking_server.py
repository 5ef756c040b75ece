"""`workflow/scripts/mlflow_server.sh` started for a test as users start it, on the loopback address.

Shared by test_mlflow_server.py and test_slurm.py. The server runs MLflow's basic-auth app
with the credentials the script creates in STORE/credentials; its log is kept outside the
store, so that a search of the log for the password cannot hit the credentials file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "workflow" / "scripts" / "mlflow_server.sh"
SERVER_TIMEOUT = 120  # s for `mlflow server` to answer /health (about 10 s idle, 30-40 s on a busy 2-core VM)
# Credentials a test must not inherit from the shell that runs it: every test names its own.
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                   "TRAINDYN_MLFLOW_CREDENTIALS")  # fmt: skip


def venv_env() -> dict[str, str]:
    """This environment with this venv first on PATH and no MLflow credentials."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    for key in (*CREDENTIAL_VARS, "MLFLOW_HOST", "MLFLOW_SERVER_ALLOWED_HOSTS", "MLFLOW_AUTH_CONFIG_PATH"):
        env.pop(key, None)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process started in its own session, and its children (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def read_credentials(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of a credentials file."""
    lines = [line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return {key: value for key, value in lines}


def run_script(store: Path, port: int, env: dict[str, str] | None = None, timeout: float = 60,
               args: tuple[str, ...] = ("--", "--workers", "1")) -> subprocess.CompletedProcess:  # fmt: skip
    """Run the script to its end (a refusal); a server it starts instead is stopped at ``timeout``."""
    env = {**venv_env(), "MLFLOW_HOST": "127.0.0.1", **(env or {})}
    proc = subprocess.Popen([str(SCRIPT), str(store), str(port), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        out, _ = proc.communicate()
        pytest.fail(f"mlflow_server.sh did not exit within {timeout:.0f} s:\n{out[-3000:]}", pytrace=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


@dataclass
class TrackingServer:
    uri: str
    store: Path
    proc: subprocess.Popen
    log: Path

    @property
    def credentials(self) -> Path:
        return self.store / "credentials"

    @property
    def username(self) -> str:
        return read_credentials(self.credentials)["MLFLOW_TRACKING_USERNAME"]

    @property
    def password(self) -> str:
        return read_credentials(self.credentials)["MLFLOW_TRACKING_PASSWORD"]

    def wait_ready(self) -> None:
        """Block until the server answers /health (open without credentials); fail with its log otherwise."""
        deadline = time.monotonic() + SERVER_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}",
                            pytrace=False)  # fmt: skip
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"mlflow server not healthy after {SERVER_TIMEOUT} s:\n{self.log.read_text()[-3000:]}",
                    pytrace=False)  # fmt: skip

    def stop(self) -> None:
        stop_process(self.proc)


def start_server(folder: Path) -> TrackingServer:
    """Start the script on 127.0.0.1 at a free port, store ``folder/store``, log ``folder/server.log``.

    Returns at once (the server takes 10-40 s to come up): call ``wait_ready``, and ``stop``.
    """
    store, log, port = folder / "store", folder / "server.log", free_port()
    env = {**venv_env(), "MLFLOW_HOST": "127.0.0.1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(SCRIPT), str(store), str(port), "--", "--workers", "1"], cwd=folder,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    return TrackingServer(f"http://127.0.0.1:{port}", store, proc, log)
