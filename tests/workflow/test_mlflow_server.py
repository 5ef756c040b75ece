"""The cluster's tracking server (workflow/scripts/mlflow_server.sh) authenticates every request.

One server, started by the script as users start it but on 127.0.0.1 at a free port with a
temporary store, answers 401 to the REST API and the proxied artifact store without
credentials and with wrong ones; the credentials the script created (mode 600) open both,
and traindyn's tracking module logs a job's run with them from the environment. The script
refuses to start while its credentials file is open to group or others. Without a server
(a stand-in `mlflow` that records how it was called), the script's bind address and options.
"""

import base64
import json
import os
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tracking_server import (
    CREDENTIAL_VARS,
    SCRIPT,
    free_port,
    read_credentials,
    run_script,
    start_server,
    venv_env,
)

EXPERIMENT = "auth-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The script's server on 127.0.0.1, stopped (with its children) whatever happens."""
    running = start_server(tmp_path_factory.mktemp("mlflow-auth"))
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def _request(url: str, method: str = "GET", data: bytes | None = None,
             auth: tuple[str, str] | None = None) -> tuple[int, bytes]:  # fmt: skip
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json" if data[:1] == b"{" else "application/octet-stream")
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _endpoints(uri: str) -> dict[str, tuple[str, str, bytes | None]]:
    rest, art = f"{uri}/api/2.0/mlflow", f"{uri}/api/2.0/mlflow-artifacts/artifacts"
    return {
        "search experiments": ("GET", f"{rest}/experiments/search?max_results=10", None),
        "create experiment": ("POST", f"{rest}/experiments/create", json.dumps({"name": "intruder"}).encode()),
        "delete experiment": ("POST", f"{rest}/experiments/delete", json.dumps({"experiment_id": "0"}).encode()),
        "search runs (ajax)": ("POST", f"{uri}/ajax-api/2.0/mlflow/runs/search", b'{"experiment_ids": ["0"]}'),
        "list artifacts": ("GET", f"{art}?path=0", None),
        "download artifact": ("GET", f"{art}/0/probe/artifacts/probe.txt", None),
        "upload artifact": ("PUT", f"{art}/0/probe/artifacts/intruder.txt", b"written without credentials"),
        "delete artifact": ("DELETE", f"{art}/0/probe/artifacts/probe.txt", None),
    }


@pytest.mark.slow  # the server takes 10-40 s to start
def test_credentials_file_is_private_and_random(server):
    creds = server.credentials
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600, oct(creds.stat().st_mode)
    values = read_credentials(creds)
    assert set(values) >= {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}, values.keys()
    password = values["MLFLOW_TRACKING_PASSWORD"]
    assert len(password) >= 30 and password.isalnum(), "expected a long random password"
    for name in ("flask-secret-key", "basic_auth.db", "basic_auth.ini"):
        assert stat.S_IMODE((server.store / name).stat().st_mode) == 0o600, name
    ini = (server.store / "basic_auth.ini").read_text()
    assert "default_permission = NO_PERMISSIONS" in ini and password not in ini
    assert password not in server.log.read_text(), "the server's log shows the password"


@pytest.mark.slow  # the server takes 10-40 s to start
def test_rest_api_and_artifacts_refuse_missing_and_wrong_credentials(server):
    user, password = server.username, server.password
    good = (user, password)
    # A file the good credentials can fetch, so that a 401 below is the login, not a missing file.
    status, _ = _request(f"{server.uri}/api/2.0/mlflow-artifacts/artifacts/0/probe/artifacts/probe.txt",
                         "PUT", b"probe", auth=good)  # fmt: skip
    assert status == 200
    for what, (method, url, data) in _endpoints(server.uri).items():
        for auth in (None, (user, "wrong-" + password), ("someone", password), (user, "")):
            status, body = _request(url, method, data, auth)
            assert status == 401, f"{what} with {auth and auth[0]!r}: {status} {body[:200]!r}"
    assert not (server.store / "artifacts/0/probe/artifacts/intruder.txt").exists()
    assert (server.store / "artifacts/0/probe/artifacts/probe.txt").read_bytes() == b"probe"
    # The generated credentials open the same endpoints.
    for what in ("search experiments", "search runs (ajax)", "list artifacts", "download artifact"):
        method, url, data = _endpoints(server.uri)[what]
        status, body = _request(url, method, data, good)
        assert status == 200, f"{what} with the generated credentials: {status} {body[:300]!r}"
    assert _request(_endpoints(server.uri)["download artifact"][1], auth=good)[1] == b"probe"


@pytest.fixture
def no_credentials():
    """No MLflow credentials in this process's environment; what the test (or traindyn) sets is undone."""
    saved = {var: os.environ.pop(var) for var in CREDENTIAL_VARS if var in os.environ}
    try:
        yield os.environ
    finally:
        for var in CREDENTIAL_VARS:
            os.environ.pop(var, None)
        os.environ.update(saved)


def _tracking(uri: str):
    from traindyn.config import load_config

    return load_config([], [f"tracking.uri={uri}", f"tracking.experiment={EXPERIMENT}"])


@pytest.mark.slow  # the server takes 10-40 s to start
def test_job_run_logs_with_the_credentials_file(server, no_credentials, tmp_path):
    from mlflow.tracking import MlflowClient

    from traindyn.track import job_run

    no_credentials["TRAINDYN_MLFLOW_CREDENTIALS"] = str(server.credentials)
    cfg = _tracking(server.uri)
    artifact = tmp_path / "curve.txt"
    artifact.write_text("0.5\n")
    with job_run(cfg.tracking, "train", "auth-run", {"run": "auth-run"}, cfg.hash) as job:
        job.log_params({"lr": 0.1, "model": {"width": 8}})
        job.log_metrics({"loss": 0.5}, step=1)
        job.log_artifact(artifact)
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == server.username  # loaded for child processes
    client = MlflowClient(server.uri)  # the same credentials, from the environment
    run = client.get_run(job.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1", "model.width": "8"}
    assert run.data.metrics == {"loss": 0.5}
    assert [a.path for a in client.list_artifacts(job.run_id)] == ["curve.txt"]
    logged = json.dumps([run.data.params, run.data.tags, run.data.metrics])
    assert server.password not in logged, "the password reached an MLflow param or tag"


@pytest.mark.slow  # the server takes 10-40 s to start
def test_job_run_without_or_with_wrong_credentials_stops_and_says_what_to_do(server, no_credentials, tmp_path):
    from traindyn.track import TrackingAuthError, job_run

    cfg = _tracking(server.uri)
    with pytest.raises(TrackingAuthError, match="no credentials.*TRAINDYN_MLFLOW_CREDENTIALS.*MLFLOW_TRACKING_PASSWORD"):
        with job_run(cfg.tracking, "train", "anonymous", {}, cfg.hash):
            pass
    no_credentials["MLFLOW_TRACKING_USERNAME"] = server.username
    no_credentials["MLFLOW_TRACKING_PASSWORD"] = "not-" + server.password
    with pytest.raises(TrackingAuthError, match="rejected user") as err:
        with job_run(cfg.tracking, "train", "wrong", {}, cfg.hash):
            pass
    assert server.password not in str(err.value)
    # A credentials file open to others is refused on the client side too.
    leaky = tmp_path / "credentials"
    leaky.write_text(server.credentials.read_text())
    leaky.chmod(0o644)
    del no_credentials["MLFLOW_TRACKING_PASSWORD"]
    no_credentials["TRAINDYN_MLFLOW_CREDENTIALS"] = str(leaky)
    with pytest.raises(TrackingAuthError, match="chmod 600"):
        with job_run(cfg.tracking, "train", "leaky", {}, cfg.hash):
            pass
    no_credentials["TRAINDYN_MLFLOW_CREDENTIALS"] = str(tmp_path / "missing")
    with pytest.raises(TrackingAuthError, match="no such file"):
        with job_run(cfg.tracking, "train", "missing", {}, cfg.hash):
            pass


@pytest.mark.slow
@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660])
def test_script_refuses_to_start_with_credentials_open_to_others(server, mode):
    creds = server.credentials
    try:
        creds.chmod(mode)
        out = run_script(server.store, free_port())
    finally:
        creds.chmod(0o600)
    assert out.returncode != 0, out.stdout[-2000:]
    assert f"mode {mode:o}" in out.stdout and f"chmod 600 {creds}" in out.stdout, out.stdout[-2000:]
    assert server.password not in out.stdout


@pytest.mark.slow  # the server takes 10-40 s to start
def test_script_refuses_credentials_that_do_not_open_the_user_store(server, tmp_path):
    # A copy of the server's store whose credentials file was lost, then replaced by another.
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    (store / "basic_auth.db").write_bytes((server.store / "basic_auth.db").read_bytes())
    (store / "basic_auth.db").chmod(0o600)
    out = run_script(store, free_port())
    assert out.returncode != 0 and "the admin password is lost" in out.stdout, out.stdout[-2000:]
    creds = store / "credentials"
    creds.write_text(f"MLFLOW_TRACKING_USERNAME={server.username}\nMLFLOW_TRACKING_PASSWORD=another-password-0123\n")
    creds.chmod(0o600)
    out = run_script(store, free_port())
    assert out.returncode != 0 and "are not an admin of" in out.stdout, out.stdout[-2000:]


# -- without a server: how the script calls `mlflow server` ------------------------------------
FAKE_MLFLOW = """#!/usr/bin/env bash
# Records its arguments and the auth settings it was given, one JSON object.
exec python3 -c 'import json, os, sys; json.dump({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items()
    if k.startswith(("MLFLOW_AUTH", "MLFLOW_FLASK"))}}, open(os.environ["FAKE_MLFLOW_OUT"], "w"))' "$@"
"""


def _fake_call(tmp_path: Path, **env: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "mlflow").write_text(FAKE_MLFLOW)
    (bin_dir / "mlflow").chmod(0o755)
    out = tmp_path / "call.json"
    base = venv_env()
    full_env = {**base, "PATH": f"{bin_dir}{os.pathsep}{base['PATH']}", "FAKE_MLFLOW_OUT": str(out), **env}
    proc = subprocess.run([str(SCRIPT), str(tmp_path / "store"), "5999"], env=full_env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    if "cannot find the address" in proc.stderr:
        pytest.skip("this machine has no address but loopback")
    assert proc.returncode == 0, proc.stderr
    call = json.loads(out.read_text())
    call["stderr"] = proc.stderr
    opts = call["argv"]
    call["opts"] = {opts[i]: opts[i + 1] for i in range(len(opts) - 1) if opts[i].startswith("--")}
    return call


def test_script_binds_this_machines_address_not_every_interface(tmp_path):
    call = _fake_call(tmp_path)
    opts = call["opts"]
    assert call["argv"][0] == "server" and opts["--app-name"] == "basic-auth", call["argv"]
    assert opts["--host"] not in ("0.0.0.0", "::", "") and not opts["--host"].startswith("127."), opts
    assert "10.*" not in opts["--allowed-hosts"] and "192.168.*" not in opts["--allowed-hosts"], opts
    assert opts["--host"] in opts["--allowed-hosts"].split(","), opts
    env = call["env"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == str(tmp_path / "store/basic_auth.ini")
    password = read_credentials(tmp_path / "store/credentials")["MLFLOW_TRACKING_PASSWORD"]
    assert stat.S_IMODE((tmp_path / "store/credentials").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "store").stat().st_mode) == 0o700
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == password and env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert all(password not in arg for arg in call["argv"]), "the password is on the command line (ps shows it)"
    assert password not in call["stderr"]
    # A second start keeps the credentials (the user store holds their hash from the first).
    assert _fake_call(tmp_path)["env"]["MLFLOW_AUTH_ADMIN_PASSWORD"] == password


def test_script_binds_every_interface_only_when_asked(tmp_path):
    assert _fake_call(tmp_path, MLFLOW_HOST="0.0.0.0")["opts"]["--host"] == "0.0.0.0"
    assert _fake_call(tmp_path, MLFLOW_HOST="127.0.0.1")["opts"]["--host"] == "127.0.0.1"
