"""A throwaway single-node SLURM cluster with accounting, started and stopped by tests.

``slurm_cluster()`` installs Debian 12's packages where they are missing (as root, with
apt-get) and starts, under one temporary folder and on free ports of 127.0.0.1:

    munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd

so that ``sbatch``, ``srun``, ``squeue`` and ``sacct`` behave as on a real cluster. Nothing
outside that folder is read or changed (no /etc/slurm, no /etc/munge, no system services):
clients find the cluster through ``SLURM_CONF``, which :meth:`SlurmCluster.env` sets.
Every daemon is stopped, and the folder removed, when the context exits, also on failure.

Failures raise :class:`SlurmUnavailable` with what failed and the tail of the daemon's log.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PACKAGES", "SlurmCluster", "SlurmUnavailable", "ensure_installed", "slurm_cluster"]

# The programs the cluster needs and the Debian 12 package of each.
_PROGRAMS = {
    "munged": "munge",
    "mungekey": "munge",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "slurmdbd": "slurmdbd",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sbatch": "slurm-client",
    "srun": "slurm-client",
    "squeue": "slurm-client",
    "sacct": "slurm-client",
    "sacctmgr": "slurm-client",
    "scontrol": "slurm-client",
    "scancel": "slurm-client",
    "sinfo": "slurm-client",
}
PACKAGES = tuple(sorted(set(_PROGRAMS.values())))
_SEARCH_PATH = os.pathsep.join(["/usr/sbin", "/usr/bin", "/sbin", "/bin", os.environ.get("PATH", "")])
_START_TIMEOUT = 60  # seconds for one daemon to come up; they take 1-3 s here


class SlurmUnavailable(RuntimeError):
    """The cluster could not be installed or started; the message says what and why."""


def _which(program: str) -> str | None:
    return shutil.which(program, path=_SEARCH_PATH)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as err:
        return f"(no log: {err})"
    return "\n".join(text[-lines:]) or "(empty)"


@contextlib.contextmanager
def _services_not_started() -> Iterator[None]:
    # Debian's maintainer scripts start munge, mariadb and slurm as system services unless
    # policy-rc.d forbids it; those would be daemons this test does not own or stop.
    policy = Path("/usr/sbin/policy-rc.d")
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# traindyn tests: no service starts during apt-get install\nexit 101\n")
    policy.chmod(0o755)
    try:
        yield
    finally:
        policy.unlink(missing_ok=True)


def ensure_installed() -> dict[str, str]:
    """Return the absolute path of every program the cluster needs, installing them if absent.

    Returns:
        Program name -> absolute path.

    Raises:
        SlurmUnavailable: Programs are missing and cannot be installed (not root, no
            apt-get, or apt-get failed); the message names the programs and packages.
    """
    missing = sorted(p for p in _PROGRAMS if _which(p) is None)
    if missing:
        packages = sorted({_PROGRAMS[p] for p in missing})
        install = "apt-get install -y -q --no-install-recommends " + " ".join(packages)
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise SlurmUnavailable(
                f"SLURM test cluster: programs {missing} are missing (Debian packages {packages}) "
                f"and this process cannot install them (uid {os.geteuid()}, apt-get "
                f"{'found' if shutil.which('apt-get') else 'not found'}). Run as root, or "
                f"`sudo {install}`, or set TRAINDYN_SKIP_SLURM=1 to skip the SLURM tests."
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        with _services_not_started():
            out = subprocess.run(install.split(), env=env, capture_output=True, text=True, timeout=600)
            if out.returncode != 0:  # stale or absent package lists: refresh once
                subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
                out = subprocess.run(install.split(), env=env, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise SlurmUnavailable(f"`{install}` failed (exit {out.returncode}):\n{(out.stdout + out.stderr)[-3000:]}")
        still = sorted(p for p in _PROGRAMS if _which(p) is None)
        if still:
            raise SlurmUnavailable(f"`{install}` succeeded but {still} are still not found on {_SEARCH_PATH}")
    return {p: _which(p) for p in _PROGRAMS}


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class _Daemon:
    name: str
    proc: subprocess.Popen
    log: Path


@dataclass
class SlurmCluster:
    """A running single-node cluster: where it lives and how to talk to it.

    Attributes:
        root: Folder holding configuration, state, spool and logs of every daemon.
        conf: Its slurm.conf; clients find it through ``SLURM_CONF``.
        cluster: ClusterName in slurm.conf and the accounting database.
        partition: The one (default) partition.
        account: An accounting account the current user may submit to.
        node: NodeName of the single node (this machine's short host name).
        programs: Absolute paths of the SLURM programs.
    """

    root: Path
    conf: Path
    cluster: str
    partition: str
    account: str
    node: str
    programs: dict[str, str]
    _daemons: list[_Daemon] = field(default_factory=list)

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment in which SLURM clients (and jobs, which inherit it) use this cluster."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        # The wrappers first (see _srun_wrapper), then wherever the clients are installed.
        path = [str(self.root / "bin"), *env.get("PATH", "").split(os.pathsep)]
        if os.path.dirname(self.programs["sbatch"]) not in path:
            path.append(os.path.dirname(self.programs["sbatch"]))
        env["PATH"] = os.pathsep.join(p for p in path if p)
        return env

    def run(self, program: str, *args: str, check: bool = True, timeout: float = 60) -> str:
        """Run a SLURM client program against this cluster and return its stdout."""
        cmd = [self.programs[program], *args]
        out = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise SlurmUnavailable(
                f"`{' '.join(cmd)}` failed (exit {out.returncode}): {out.stderr.strip()}\n{self.log_tails()}"
            )
        return out.stdout

    def log_tails(self, lines: int = 25) -> str:
        """The last lines of every daemon's log, for failure messages."""
        return "\n".join(f"--- {d.name} ({d.log}) ---\n{_tail(d.log, lines)}" for d in self._daemons)

    # -- starting --------------------------------------------------------------------------
    def _start(self, name: str, cmd: list[str], log: Path, *, user: str | None = None) -> _Daemon:
        out = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                user=user, group=user, extra_groups=[] if user else None)  # fmt: skip
        out.close()
        daemon = _Daemon(name, proc, log)
        self._daemons.append(daemon)
        return daemon

    def _wait(self, daemon: _Daemon, what: str, ready, timeout: float = _START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if daemon.proc.poll() is not None:
                raise SlurmUnavailable(
                    f"{daemon.name} exited with code {daemon.proc.returncode} before {what}.\n"
                    f"--- {daemon.log} ---\n{_tail(daemon.log)}\n"
                    f"--- stdout/stderr ---\n{_tail(self.root / 'log' / f'{daemon.name}.out')}"
                )
            if ready():
                return
            time.sleep(0.2)
        raise SlurmUnavailable(
            f"{daemon.name} did not report {what} within {timeout:.0f} s.\n{self.log_tails()}"
        )

    def _stop_all(self) -> list[str]:
        """Cancel every job, then stop the daemons in reverse start order; return problems."""
        problems = []
        if any(d.name == "slurmctld" and d.proc.poll() is None for d in self._daemons):
            with contextlib.suppress(Exception):
                self.run("scancel", "--full", "--user", pwd.getpwuid(os.geteuid()).pw_name,
                         check=False, timeout=20)  # fmt: skip
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline and self.run("squeue", "-h", check=False, timeout=10).strip():
                    time.sleep(0.5)
        for daemon in reversed(self._daemons):
            if daemon.proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(daemon.proc.pid, signal.SIGTERM)
            try:
                daemon.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                problems.append(f"{daemon.name} (pid {daemon.proc.pid}) ignored SIGTERM; killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(daemon.proc.pid, signal.SIGKILL)
                daemon.proc.wait(timeout=10)
        return problems


def _munge(c: SlurmCluster) -> None:
    mdir = c.root / "munge"
    mdir.mkdir(mode=0o755)  # as Debian's /run/munge: clients of any user reach the socket
    key = mdir / "munge.key"
    subprocess.run([c.programs["mungekey"], "--create", f"--keyfile={key}"], check=True,
                   capture_output=True, timeout=30)  # fmt: skip
    munge_user = pwd.getpwnam("munge")
    for path in (mdir, key):
        os.chown(path, munge_user.pw_uid, munge_user.pw_gid)
    key.chmod(0o600)
    sock = mdir / "munge.socket"
    # In the foreground munged logs to stderr, i.e. to log/munged.out.
    d = c._start("munged", [c.programs["munged"], "--foreground", "--force", f"--socket={sock}",
                            f"--key-file={key}", f"--pid-file={mdir / 'munged.pid'}",
                            f"--seed-file={mdir / 'munged.seed'}"],
                 c.root / "log" / "munged.out", user="munge")  # fmt: skip
    c._wait(d, "its socket", sock.exists)


def _mariadb(c: SlurmCluster, ports: dict[str, int]) -> None:
    data = c.root / "mysql"
    out = subprocess.run([c.programs["mariadb-install-db"], "--no-defaults", f"--datadir={data}",
                          "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    if out.returncode != 0:
        raise SlurmUnavailable(f"mariadb-install-db failed (exit {out.returncode}):\n{(out.stdout + out.stderr)[-3000:]}")
    log = c.root / "log" / "mariadbd.log"
    # Only slurmdbd connects, on 127.0.0.1 and a private port: no grant tables needed.
    d = c._start("mariadbd", [c.programs["mariadbd"], "--no-defaults", f"--datadir={data}", "--user=root",
                              f"--socket={c.root / 'mysql.sock'}", "--bind-address=127.0.0.1",
                              f"--port={ports['mysql']}", "--skip-grant-tables", "--skip-name-resolve",
                              "--innodb-buffer-pool-size=64M", f"--log-error={log}",
                              f"--pid-file={c.root / 'run' / 'mariadbd.pid'}"],
                 log)  # fmt: skip
    c._wait(d, f"listening on port {ports['mysql']}", lambda: _port_open(ports["mysql"]))


def _write_conf(c: SlurmCluster, ports: dict[str, int]) -> None:
    auth = f"AuthType=auth/munge\nAuthInfo=socket={c.root / 'munge' / 'munge.socket'}\n"
    dbd = c.conf.with_name("slurmdbd.conf")
    dbd.write_text(
        auth + "DbdHost=localhost\nDbdAddr=127.0.0.1\n"
        f"DbdPort={ports['slurmdbd']}\nSlurmUser=root\n"
        "StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
        f"StoragePort={ports['mysql']}\nStorageUser=root\nStorageLoc=slurm_acct_db\n"
        f"PidFile={c.root / 'run' / 'slurmdbd.pid'}\nLogFile={c.root / 'log' / 'slurmdbd.log'}\n"
    )
    dbd.chmod(0o600)  # slurmdbd refuses a configuration others can read
    # The node as slurmd sees this machine (CPUs, sockets, cores, memory), so it registers.
    probe = subprocess.run([c.programs["slurmd"], "-C"], capture_output=True, text=True, timeout=30)
    node_line = next((ln for ln in probe.stdout.splitlines() if ln.startswith("NodeName=")), None)
    if node_line is None:
        raise SlurmUnavailable(f"`slurmd -C` printed no NodeName line: {probe.stdout}{probe.stderr}")
    node_line = node_line.replace(f"NodeName={node_line.split()[0].split('=')[1]}", f"NodeName={c.node}")
    c.conf.write_text(
        f"# Single-node test cluster written by {__name__}; see that module.\n"
        f"ClusterName={c.cluster}\nSlurmctldHost={c.node}(127.0.0.1)\n"
        f"SlurmctldPort={ports['slurmctld']}\nSlurmdPort={ports['slurmd']}\n"
        + auth
        + "CredType=cred/munge\nSlurmUser=root\nSlurmdUser=root\n"
        f"StateSaveLocation={c.root / 'state'}\nSlurmdSpoolDir={c.root / 'spool'}\n"
        f"SlurmctldPidFile={c.root / 'run' / 'slurmctld.pid'}\nSlurmdPidFile={c.root / 'run' / 'slurmd.pid'}\n"
        f"SlurmctldLogFile={c.root / 'log' / 'slurmctld.log'}\nSlurmdLogFile={c.root / 'log' / 'slurmd.log'}\n"
        # No cgroups in containers and CI VMs: track processes by parent id, no CPU binding.
        "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
        "JobAcctGatherType=jobacct_gather/linux\nJobAcctGatherFrequency=30\n"
        "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\nDefMemPerCPU=1000\n"
        "SchedulerType=sched/backfill\nMpiDefault=none\nReturnToService=2\nMailProg=/bin/true\n"
        "MinJobAge=300\nKillWait=5\nInactiveLimit=0\n"
        # Accounting as on a real cluster: sacct answers from slurmdbd, jobs need an account.
        "AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
        f"AccountingStoragePort={ports['slurmdbd']}\nAccountingStorageEnforce=associations\n"
        # Clients reach slurmdbd with this munge socket, not AuthInfo's (slurm.conf(5)).
        f"AccountingStoragePass={c.root / 'munge' / 'munge.socket'}\n"
        "JobCompType=jobcomp/none\n"
        f"{node_line} NodeAddr=127.0.0.1 State=UNKNOWN\n"
        f"PartitionName={c.partition} Nodes={c.node} Default=YES MaxTime=INFINITE State=UP\n"
    )


def _srun_wrapper(c: SlurmCluster) -> None:
    # Inside a job, snakemake-executor-plugin-slurm-jobstep runs each rule with `srun` in an
    # environment stripped of SLURM_* variables, SLURM_CONF included. A real cluster's srun
    # then reads /etc/slurm/slurm.conf (or asks slurmd, configless); this cluster lives
    # elsewhere, so jobs find an `srun` first on PATH that restores SLURM_CONF.
    wrapper = c.root / "bin" / "srun"
    wrapper.write_text(f'#!/bin/sh\nSLURM_CONF={c.conf} exec {c.programs["srun"]} "$@"\n')
    wrapper.chmod(0o755)


def _slurm(c: SlurmCluster, ports: dict[str, int]) -> None:
    dbd = c._start("slurmdbd", [c.programs["slurmdbd"], "-D"], c.root / "log" / "slurmdbd.log")
    c._wait(dbd, f"listening on port {ports['slurmdbd']}", lambda: _port_open(ports["slurmdbd"]))
    user = pwd.getpwuid(os.geteuid()).pw_name
    for args in (["add", "cluster", c.cluster],
                 ["add", "account", c.account, f"Cluster={c.cluster}", "Description=traindyn tests",
                  "Organization=traindyn"],
                 ["add", "user", user, f"Account={c.account}", f"Cluster={c.cluster}"]):  # fmt: skip
        c.run("sacctmgr", "-i", *args)
    ctld = c._start("slurmctld", [c.programs["slurmctld"], "-D", "-i"], c.root / "log" / "slurmctld.log")
    c._wait(ctld, "UP to `scontrol ping`",
            lambda: "UP" in c.run("scontrol", "ping", check=False, timeout=10))  # fmt: skip
    slurmd = c._start("slurmd", [c.programs["slurmd"], "-D", "-N", c.node], c.root / "log" / "slurmd.log")
    c._wait(slurmd, f"node {c.node} idle in `sinfo`",
            lambda: c.run("sinfo", "-h", "-N", "-o", "%t", check=False, timeout=10).strip() == "idle")  # fmt: skip


@contextlib.contextmanager
def slurm_cluster(account: str = "traindyn", partition: str = "debug") -> Iterator[SlurmCluster]:
    """Start a single-node cluster with accounting; stop it and delete its folder on exit.

    Args:
        account: Accounting account created for the current user.
        partition: Name of the single, default partition.

    Yields:
        The running cluster.

    Raises:
        SlurmUnavailable: A program is missing and cannot be installed, or a daemon did
            not start; the message names it and shows its log.
    """
    if os.geteuid() != 0:
        missing = sorted(p for p in _PROGRAMS if _which(p) is None)
        packages = sorted({_PROGRAMS[p] for p in missing})
        raise SlurmUnavailable(
            f"SLURM test cluster: must run as root (uid is {os.geteuid()}): slurmd launches jobs "
            "and munged runs as the munge user"
            + (f"; also missing: programs {missing} (Debian packages {packages})" if missing else "")
            + ". Set TRAINDYN_SKIP_SLURM=1 to skip the SLURM tests."
        )
    programs = ensure_installed()
    # Not pytest's tmp_path: munged (user munge) must reach its folder, and unix socket paths
    # must stay short (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="traindyn-slurm-"))
    root.chmod(0o755)
    for sub in ("bin", "etc", "state", "spool", "log", "run"):
        (root / sub).mkdir()
    cluster = SlurmCluster(root=root, conf=root / "etc" / "slurm.conf", cluster="traindyn",
                           partition=partition, account=account,
                           node=socket.gethostname().split(".")[0], programs=programs)  # fmt: skip
    ports = dict(zip(("mysql", "slurmdbd", "slurmctld", "slurmd"), _free_ports(4), strict=True))
    problems: list[str] = []
    try:
        _munge(cluster)
        _mariadb(cluster, ports)
        _write_conf(cluster, ports)
        _srun_wrapper(cluster)
        _slurm(cluster, ports)
        yield cluster
    finally:
        problems = cluster._stop_all()
        shutil.rmtree(root, ignore_errors=True)
    if problems:
        raise SlurmUnavailable("stopping the SLURM test cluster: " + "; ".join(problems))
