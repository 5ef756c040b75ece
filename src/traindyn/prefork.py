"""A fork server: stage commands start from a process that has already imported torch.

A training run of the default scaling study lasts 1-10 s, while starting Python, importing
torch and the lazy import of ``torch._dynamo`` that creating a torch optimizer triggers cost
4-5 s of CPU per process: on a 2-core machine, more than half of the study. Snakemake still
runs one job per run, with the same ``traindyn`` command; when ``TRAINDYN_PREFORK_SOCKET``
names a live server, that command is a thin client that hands its argv, working directory,
environment and stdout/stderr to the server, which forks a child (imports done, no torch op
run yet, so forking is safe) to execute it and reports the exit status back. Without a
server, or when it cannot be reached (another node, a stale socket), the command runs
in-process as usual: the server only ever saves time.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

__all__ = ["SOCKET_ENV", "run_via_server", "serve", "start_server", "stop_server"]

SOCKET_ENV = "TRAINDYN_PREFORK_SOCKET"
_HEADER = struct.Struct("!I")
_STATUS = struct.Struct("!i")


def run_via_server(argv: list[str]) -> int | None:
    """Run ``traindyn argv`` in a child of the server; None if no server can take it."""
    path = os.environ.get(SOCKET_ENV)
    if not path or not Path(path).exists():
        return None
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sys.stdout.flush()
        sys.stderr.flush()
        socket.send_fds(sock, [_HEADER.pack(len(request)) + request], [1, 2])
    except OSError:
        return None
    with sock:
        # Block until the child's exit status arrives; if this client is killed, the server
        # sees the connection close and kills the child.
        data = b""
        while len(data) < _STATUS.size:
            chunk = sock.recv(_STATUS.size - len(data))
            if not chunk:
                print("traindyn: the prefork server went away while running the job", file=sys.stderr)
                return 1
            data += chunk
    return _STATUS.unpack(data)[0]


# Modules a job would import on first use (found by diffing sys.modules around a job): the
# parquet writer and reader that pandas loads lazily, tqdm's lock, the optimizers' first step
# (profiler hooks) and torch.load's serialization config.
_LAZY_IMPORTS = (
    "pyarrow.dataset", "pyarrow.pandas_compat", "pyarrow.parquet",
    "pandas.core.arrays.arrow.extension_types", "multiprocessing.synchronize",
    "torch.profiler._cupti_monitor", "torch.utils.serialization",
)  # fmt: skip


def _warm_imports() -> None:
    import pandas  # noqa: F401
    import torch
    import torch._dynamo  # noqa: F401  - what torch.optim would import lazily in every job

    from . import cli, cmd, config, data, grow, mat, models, param, scaling, spectra, train  # noqa: F401
    from .cli import subcommands
    from .studies import STUDIES  # noqa: F401
    from .track import mlflow_store, records  # noqa: F401
    from .train import callbacks, loop, trajectory  # noqa: F401  - the package imports them lazily

    # What every job would otherwise import on first use: each stage's CLI module (the parser
    # is built from all of them) and _LAZY_IMPORTS. A 4-step scaling job's child took 0.36 s
    # without them, 0.14 s with them and the memory-mapped splits (traindyn.data.load).
    subcommands()
    for name in _LAZY_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:  # private modules of other library versions: only a lost saving
            pass

    config.schema()  # parsed once here, not in every job
    from .cmd import study as _cmd  # noqa: F401  - the study entries that config validation imports
    from .grow import study as _lag  # noqa: F401
    from .mat import study as _mat  # noqa: F401
    from .scaling import study as _scaling  # noqa: F401

    del torch


def _child(conn: socket.socket, listener: socket.socket, request: dict, fds: list[int]) -> None:
    listener.close()
    conn.close()
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    code = 1
    try:
        from .cli import main

        sys.argv = ["traindyn", *request["argv"]]
        code = main(request["argv"], allow_server=False)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - report like an uncaught exception would
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(path: str | Path, parent_pid: int | None = None, idle_timeout: float = 900.0) -> None:
    """Listen on ``path`` and fork a child per request until idle or the parent is gone.

    Args:
        path: The UNIX socket to create (replaced if stale).
        parent_pid: Exit when this process (the Snakemake that started us) is gone.
        idle_timeout: Exit after this many seconds without a request or a running child.
    """
    _warm_imports()
    # Every object imported so far moves to the collector's permanent generation: a child's
    # collections then never walk (and so never copy-on-write) the inherited heap of torch,
    # pandas and the schema, which cost 0.2 s per collection and ~0.4 s per job (measured).
    gc.collect()
    gc.freeze()
    path = Path(path)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    children: dict[int, socket.socket] = {}
    last_activity = time.monotonic()
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop:
            readable, _, _ = select.select([listener, *children.values()], [], [], 0.02)
            for sock in readable:
                if sock is listener:
                    conn, _ = listener.accept()
                    msg, fds, _, _ = socket.recv_fds(conn, 1 << 22, 2)
                    while len(msg) < _HEADER.size or len(msg) < _HEADER.size + _HEADER.unpack(msg[:4])[0]:
                        more = conn.recv(1 << 22)
                        if not more:
                            break
                        msg += more
                    request = json.loads(msg[_HEADER.size :])
                    pid = os.fork()
                    if pid == 0:
                        _child(conn, listener, request, fds)
                    for fd in fds:
                        os.close(fd)
                    children[pid] = conn
                else:  # a client closed its connection: it was killed, so kill its job
                    pid = next(p for p, c in children.items() if c is sock)
                    os.killpg(pid, signal.SIGKILL)
            for pid in list(children):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    conn = children.pop(pid)
                    code = os.waitstatus_to_exitcode(status)
                    try:
                        conn.sendall(_STATUS.pack(code if code >= 0 else 128 - code))
                    except OSError:
                        pass
                    conn.close()
            if children:
                last_activity = time.monotonic()
            gone = parent_pid is not None and not _alive(parent_pid)
            if gone or time.monotonic() - last_activity > idle_timeout:
                break
    finally:
        for pid in children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        listener.close()
        path.unlink(missing_ok=True)
        try:
            path.parent.rmdir()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_server(timeout: float = 60.0) -> tuple[int, str] | None:
    """Start ``serve`` in a detached process owned by this one and announce it to child jobs.

    Sets ``TRAINDYN_PREFORK_SOCKET`` in this process's environment (jobs inherit it).

    Returns:
        ``(pid, socket path)`` once the server listens, or None (jobs then run in-process)
        if it is not ready within ``timeout``.
    """
    import subprocess
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="traindyn-prefork-")) / "server.sock"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from traindyn.prefork import serve; "
         "serve(sys.argv[1], parent_pid=int(sys.argv[2]))", str(path), str(os.getpid())],
        start_new_session=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            os.environ[SOCKET_ENV] = str(path)
            return proc.pid, str(path)
        if proc.poll() is not None:
            return None
        time.sleep(0.1)
    proc.kill()
    return None


def stop_server(server: tuple[int, str] | None) -> None:
    """Ask the server that ``start_server`` returned to finish, and forget it."""
    if server:
        os.environ.pop(SOCKET_ENV, None)
        try:
            os.kill(server[0], signal.SIGTERM)
        except ProcessLookupError:
            pass
