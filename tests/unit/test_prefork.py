import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from traindyn.prefork import SOCKET_ENV, start_server, stop_server

TRAINDYN = shutil.which("traindyn", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def server():
    started = start_server()
    assert started, "the prefork server did not start"
    yield started
    stop_server(started)
    deadline = time.time() + 10
    while Path(started[1]).exists() and time.time() < deadline:
        time.sleep(0.1)
    assert not Path(started[1]).exists(), "the server left its socket behind"


def _run(args, cwd, socket=None, **kw):
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    if socket:
        env[SOCKET_ENV] = socket
    return subprocess.run([TRAINDYN, *args], cwd=cwd, env=env, capture_output=True, text=True, **kw)


def test_a_job_through_the_server_equals_the_same_job_in_process(server, tmp_path):
    args = ["data", "--dataset", "digits", "--out", "d", "tracking.enabled=false", "data.max_train=100"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    start = time.perf_counter()
    via = _run(args, tmp_path / "a", socket=server[1])
    fast = time.perf_counter() - start
    start = time.perf_counter()
    local = _run(args, tmp_path / "b")
    slow = time.perf_counter() - start
    assert via.returncode == local.returncode == 0, via.stderr + local.stderr
    assert via.stdout.replace(str(tmp_path / "a"), "") == local.stdout.replace(str(tmp_path / "b"), "")
    for name in ("train.pt", "val.pt", "test.pt", "stats.parquet"):
        assert (tmp_path / "a/d" / name).read_bytes() == (tmp_path / "b/d" / name).read_bytes()
    # A ratio, not seconds: both runs slow down alike on a loaded machine. The server saves
    # the imports (~4-5 s of a ~6 s job on an idle machine).
    assert fast < 0.6 * slow, f"through the server the job took {fast:.1f}s, in-process {slow:.1f}s"


def test_exit_status_and_stderr_come_back(server, tmp_path):
    out = _run(["train", "--study", "scaling", "--run", "no-such-run", "tracking.enabled=false"],
               tmp_path, socket=server[1])
    assert out.returncode == 1
    assert "is not in study 'scaling'" in out.stderr


def test_killing_the_client_kills_its_job(server, tmp_path):
    code = "import time; time.sleep(60)"
    # `traindyn figure` on a notebook that sleeps: long enough to kill mid-way.
    nb = tmp_path / "sleepy.py"
    nb.write_text(f'# %% tags=["parameters"]\nx = 1\n# %%\n{code}\n')
    env = {**os.environ, SOCKET_ENV: server[1]}
    proc = subprocess.Popen([TRAINDYN, "figure", str(nb), "--executed", str(tmp_path / "o.ipynb"),
                             "tracking.enabled=false"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    before = []
    while not before and time.time() < deadline:  # the job is a forked child of the server
        before = subprocess.run(["pgrep", "-P", str(server[0])], capture_output=True, text=True).stdout.split()
        time.sleep(0.2)
    assert before, "the job never started in the server"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        alive = [p for p in before if Path(f"/proc/{p}").exists()]
        if not alive:
            break
        time.sleep(0.2)
    assert not alive, f"job processes {alive} outlived their killed client"


def test_without_a_server_the_command_runs_in_process(tmp_path):
    out = _run(["train", "--study", "scaling", "--list"], tmp_path, socket=str(tmp_path / "absent.sock"))
    assert out.returncode == 0 and "mup-w32-d2-lr10-s0" in out.stdout
