"""The pipeline on a real SLURM cluster through workflow/profiles/slurm, tracked on an MLflow server.

A single-node cluster with accounting (tests/workflow/slurm_cluster.py: munge, MariaDB,
slurmdbd, slurmctld, slurmd on this machine) runs part of the tiny DAG through
snakemake-executor-plugin-slurm: the data stage (one group job), the dataset figure, and
two training runs of the scaling study (one group job); the whole study would take minutes
more and test nothing new. Jobs log live to `mlflow server` over HTTP, as cluster nodes do,
authenticated with the credentials that workflow/scripts/mlflow_server.sh created (named by
TRAINDYN_MLFLOW_CREDENTIALS, as workflow/profiles/README.md tells users); the password
appears in none of the run's logs, configs or MLflow params.

Needs root (the fixture installs Debian's packages where missing). Where the cluster
cannot start the tests fail with the reason; TRAINDYN_SKIP_SLURM=1 skips them on purpose.
"""

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from slurm_cluster import SlurmCluster, SlurmUnavailable, slurm_cluster
from tracking_server import TrackingServer, start_server, stop_process, venv_env

PROFILE = ROOT / "workflow" / "profiles" / "slurm"
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
DATASETS = yaml.safe_load(TINY.read_text())["data"]["datasets"]
N_TRAIN = 2  # training runs sent through SLURM, one group job
SNAKEMAKE_TIMEOUT = 480  # s; the SLURM run takes about 2 min here. A hung status loop must fail, not hang CI

SKIP = os.environ.get("TRAINDYN_SKIP_SLURM") == "1"


def cluster_test(fn):
    """Mark a test that needs the cluster: slurm, slow, and skipped on TRAINDYN_SKIP_SLURM=1."""
    skip = pytest.mark.skipif(SKIP, reason="TRAINDYN_SKIP_SLURM=1: SLURM tests skipped on request")
    return pytest.mark.slurm(pytest.mark.slow(skip(fn)))


def _venv_env() -> dict[str, str]:
    # Jobs inherit this environment (sbatch --export=ALL): they need this venv's traindyn.
    # No MLflow credentials: the run must get them from the server's credentials file.
    env = venv_env()
    # Nothing from a surrounding SLURM job or site set-up may leak into the test cluster.
    for key in list(env):
        if key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "TRAINDYN_SLURM_")):
            del env[key]
    return env


_stop = stop_process


class _Snakemake:
    """snakemake on the repository's Snakefile in ``cwd``, in the background, output to a file."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]):
        self.cmd = [shutil.which("snakemake", path=env["PATH"]), "-s", str(ROOT / "Snakefile"),
                    "--directory", str(cwd), *args]  # fmt: skip
        self.log = cwd / f"snakemake-{time.monotonic_ns()}.out"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip

    def finish(self, timeout: float, cluster: SlurmCluster | None = None) -> subprocess.CompletedProcess:
        """Wait at most ``timeout`` seconds; on timeout kill it and fail with what it and SLURM said."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(self.proc)  # SIGTERM: snakemake cancels its SLURM jobs
            queue = cluster.run("squeue", check=False) if cluster else ""
            pytest.fail(
                f"snakemake did not finish within {timeout:.0f} s: {' '.join(self.cmd)}\n"
                f"--- last output ---\n{self.log.read_text()[-6000:]}\n--- squeue ---\n{queue}\n"
                + (cluster.log_tails() if cluster else ""),
                pytrace=False,
            )
        return subprocess.CompletedProcess(self.cmd, self.proc.returncode, self.log.read_text(), "")


def _snakemake(args: list[str], cwd: Path, env: dict[str, str], timeout: float,
               cluster: SlurmCluster | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """Run snakemake in ``cwd`` and return its result (output in ``stdout``)."""
    return _Snakemake(args, cwd, env).finish(timeout, cluster)


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> TrackingServer:
    """`workflow/scripts/mlflow_server.sh` on 127.0.0.1 with authentication; started first (slow)."""
    server = start_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster():
    """The single-node cluster; fails (never skips silently) where it cannot start."""
    try:
        with slurm_cluster() as running:
            yield running
    except SlurmUnavailable as err:
        pytest.fail(str(err), pytrace=False)


def _overlay(folder: Path, config: dict) -> str:
    """A config overlay file (snakemake's --config reads nested values as strings only)."""
    path = folder / "overlay.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _slurm_env(cluster: SlurmCluster) -> dict[str, str]:
    env = cluster.env(_venv_env())
    env["TRAINDYN_SLURM_ACCOUNT"] = cluster.account  # read by the profile's default-resources
    env["TRAINDYN_SLURM_PARTITION"] = cluster.partition
    return env


def _cluster_args(*config: str) -> list[str]:
    return [
        "--workflow-profile", str(PROFILE), "--configfile", str(TINY), *config,
        # Group jobs must fit this one node; real nodes have more CPUs than a group needs.
        "--cores", str(os.cpu_count()),
        "--slurm-init-seconds-before-status-checks", "2",  # the plugin waits 40 s by default
        "--slurm-keep-successful-logs",
    ]  # fmt: skip


@dataclass
class SlurmRun:
    work: Path
    dry_run: str
    result: subprocess.CompletedProcess
    train_runs: list[str]
    run_uuid: str | None

    @property
    def output(self) -> str:
        return self.result.stdout


@pytest.fixture(scope="module")
def slurm_run(mlflow_server, local_reference, tmp_path_factory, request) -> SlurmRun:
    """The data stage, the dataset figure and N_TRAIN training runs, through SLURM.

    The MLflow server, the local reference run and a dry run (no SLURM needed) start first
    and go on while the cluster installs and starts.
    """
    work = tmp_path_factory.mktemp("slurm-run")
    # As workflow/profiles/README.md tells users: every job logs live to the server.
    args = _cluster_args("--config", f"tracking={{uri: {mlflow_server.uri}, defer: []}}")
    dry_run = _Snakemake([*args, "-n"], work, _venv_env())
    cluster = request.getfixturevalue("cluster")
    dry = dry_run.finish(180)
    assert dry.returncode == 0, f"dry run through the slurm profile failed:\n{dry.stdout[-5000:]}"
    # The MLP sweeps' runs (the GPT sweep's train on another dataset than the GPU test copies)
    runs = sorted({r for r in re.findall(r"results/runs/scaling/([^/\s,]+)/final\.json", dry.stdout)
                   if not r.startswith("gpt-")})  # fmt: skip
    assert len(runs) >= N_TRAIN, f"the tiny scaling study has {runs}, fewer than {N_TRAIN} runs"
    train_runs = runs[:N_TRAIN]
    targets = ["results/notebooks/data_overview.ipynb",
               *[f"results/runs/scaling/{r}/final.json" for r in train_runs]]  # fmt: skip
    mlflow_server.wait_ready()
    # As workflow/profiles/README.md tells users: Snakemake reads the credentials from the
    # file the server script created and its jobs inherit them (sbatch --export=ALL).
    env = {**_slurm_env(cluster), "TRAINDYN_MLFLOW_CREDENTIALS": str(mlflow_server.credentials)}
    result = _snakemake([*targets, *args], work, env, SNAKEMAKE_TIMEOUT, cluster)
    uuid = re.search(r"SLURM run ID: (\S+)", result.stdout)
    return SlurmRun(work, dry.stdout, result, train_runs, uuid.group(1) if uuid else None)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The data stage of the tiny config run locally: the outputs SLURM's must equal.

    Started before the cluster and left running while packages install and daemons start.
    """
    work = tmp_path_factory.mktemp("local-run")
    # Targets first: options such as --configfile take every word after them.
    args = [*[f"results/data/{d}" for d in DATASETS],
            "--workflow-profile", str(ROOT / "workflow/profiles/local"), "--cores", str(os.cpu_count()),
            "--configfile", str(TINY), _overlay(work, {"tracking": {"enabled": False}})]  # fmt: skip
    run = _Snakemake(args, work, _venv_env())
    try:
        yield run
    finally:
        _stop(run.proc)


@pytest.fixture(scope="module")
def local_data(local_reference) -> Path:
    """The folder results/data of the finished local reference run."""
    out = local_reference.finish(600)
    assert out.returncode == 0, f"local reference run failed:\n{out.stdout[-5000:]}"
    return local_reference.log.parent / "results" / "data"


def _require_success(run: SlurmRun, cluster: SlurmCluster) -> None:
    if run.result.returncode != 0:
        pytest.fail(
            f"snakemake through SLURM exited with {run.result.returncode}:\n{run.output[-8000:]}\n"
            f"{cluster.log_tails()}",
            pytrace=False,
        )


# -- tests -----------------------------------------------------------------------------------
def test_slurm_profile_tolerates_groups_absent_from_the_dag(tmp_path):
    """Without training rules in the DAG, the profile's `train` group entry changes nothing.

    Needs no SLURM: a dry run. (With the scaling study, see test_jobs_run_as_grouped_slurm_jobs.)
    """
    no_scaling = _overlay(tmp_path, {"scaling": {"enabled": False}})
    out = _snakemake(["-n", "--workflow-profile", str(PROFILE), "--configfile", str(TINY), no_scaling],
                     tmp_path, _venv_env(), 120)  # fmt: skip
    assert out.returncode == 0, out.stdout[-5000:]
    assert "Group job data" in out.stdout and "train_scaling" not in out.stdout, out.stdout[-5000:]


@cluster_test
def test_jobs_run_as_grouped_slurm_jobs(slurm_run, cluster):
    dry = slurm_run.dry_run
    assert "Group job data" in dry and "Group job train" in dry, f"no data or train group:\n{dry[-5000:]}"
    _require_success(slurm_run, cluster)
    assert slurm_run.run_uuid, f"no 'SLURM run ID' in the output:\n{slurm_run.output[-3000:]}"
    rows = cluster.run("sacct", "-X", "-n", "-P", "--name", slurm_run.run_uuid,
                       "-o", "JobID,State,Account,Partition,ExitCode").split()  # fmt: skip
    jobs = [row.split("|") for row in rows]
    # 3 datasets in one group job, the figure, N_TRAIN runs in one group job.
    assert len(jobs) == 3, f"expected 3 SLURM jobs (data group, figure, train group), sacct lists {jobs}"
    assert all(state == "COMPLETED" and code == "0:0" for _, state, _, _, code in jobs), jobs
    assert {(acct, part) for _, _, acct, part, _ in jobs} == {(cluster.account, cluster.partition)}, jobs
    logs = sorted(p.relative_to(slurm_run.work) for p in (slurm_run.work / ".snakemake/slurm_logs").rglob("*.log"))
    assert len(logs) == 3, f"expected one SLURM log per SLURM job, found {logs}"


@cluster_test
def test_slurm_outputs_equal_local_outputs(slurm_run, cluster, local_data):
    _require_success(slurm_run, cluster)
    for dataset in DATASETS:
        ours, ref = slurm_run.work / "results" / "data" / dataset, local_data / dataset
        names = sorted(p.name for p in ref.iterdir() if p.is_file() and not p.name.startswith("."))
        assert names == sorted(p.name for p in ours.iterdir() if p.is_file() and not p.name.startswith("."))
        for name in names:
            if name == "manifest.json":
                a, b = (json.loads((d / name).read_text()) for d in (ours, ref))
                a.pop("created"), b.pop("created")
                assert a == b, f"{dataset}/manifest.json differs between the SLURM and the local run"
            else:
                assert (ours / name).read_bytes() == (ref / name).read_bytes(), (
                    f"{dataset}/{name} differs between the SLURM and the local run"
                )


def _client(server: TrackingServer):
    """A client of the server with its admin credentials (MLflow reads them from the environment)."""
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = server.username
    os.environ["MLFLOW_TRACKING_PASSWORD"] = server.password
    return MlflowClient(server.uri)


@pytest.fixture
def server_client(mlflow_server):
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    try:
        yield _client(mlflow_server)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@cluster_test
def test_every_slurm_job_is_tracked_on_the_mlflow_server(slurm_run, cluster, server_client):
    _require_success(slurm_run, cluster)
    client = server_client
    exp = client.get_experiment_by_name("traindyn")
    assert exp is not None, "no experiment 'traindyn' on the server"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("traindyn.kind") == "invocation"]
    jobs = [r for r in runs if r.data.tags.get("traindyn.kind") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [(r.info.run_name, r.info.status) for r in parents]
    got = sorted((r.data.tags["stage"], r.data.tags["run_id"], r.info.status,
                  r.data.tags.get("mlflow.parentRunId")) for r in jobs)  # fmt: skip
    parent = parents[0].info.run_id
    want = sorted([*[("data", d, "FINISHED", parent) for d in DATASETS],
                   ("figure", "data_overview", "FINISHED", parent),
                   *[("train", r, "FINISHED", parent) for r in slurm_run.train_runs]])  # fmt: skip
    assert got == want


@cluster_test
def test_the_password_is_in_no_log_config_or_mlflow_param(slurm_run, cluster, mlflow_server, server_client):
    """The jobs authenticated (test above) without the password reaching any output of the run."""
    _require_success(slurm_run, cluster)
    password = mlflow_server.password
    # Everything the run wrote: outputs, resolved config, job logs, SLURM logs, Snakemake's
    # own log and output (.snakemake/, snakemake-*.out), and the server's log.
    places = [str(slurm_run.work), str(mlflow_server.log), str(ROOT / "config.yaml"), str(TINY)]
    grep = subprocess.run(["grep", "-r", "-l", "-F", "-e", password, *places],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert grep.returncode == 1, f"the password is in {grep.stdout.split()} ({grep.stderr.strip()})"
    assert list((slurm_run.work / "results/logs").rglob("*.log")), "no job logs to search"
    assert list((slurm_run.work / ".snakemake/slurm_logs").rglob("*.log")), "no SLURM logs to search"
    # What SLURM recorded of each submission (sacct's SubmitLine, where this SLURM has it).
    submit = cluster.run("sacct", "-n", "-P", "--name", slurm_run.run_uuid or "-", "-o", "SubmitLine%2000",
                         check=False)  # fmt: skip
    assert password not in submit
    exp = server_client.get_experiment_by_name("traindyn")
    runs = server_client.search_runs([exp.experiment_id], max_results=1000)
    assert runs
    for run in runs:
        logged = json.dumps([run.data.params, run.data.tags, run.info.run_name])
        assert password not in logged, f"run {run.info.run_name} holds the password in a param or tag"


@cluster_test
def test_gpu_requests_reach_slurm_one_gpu_per_group_job(slurm_run, cluster, tmp_path):
    """`gpu` resources become --gpus; a group of GPU runs asks for one GPU, not one per run.

    The test cluster has no GPU (GRES-free), so SLURM must refuse the request at sbatch.
    """
    _require_success(slurm_run, cluster)
    for sub in ("results/config", "results/data/digits"):
        shutil.copytree(slurm_run.work / sub, tmp_path / sub)
    targets = [f"results/runs/scaling/{r}/final.json" for r in slurm_run.train_runs]
    args = [*targets, *_cluster_args(_overlay(tmp_path, {"tracking": {"enabled": False}})),
            "--retries", "0", "--set-resources", "train_scaling:gpu=1", "--verbose"]  # fmt: skip
    out = _snakemake(args, tmp_path, _slurm_env(cluster), 180, cluster)
    calls = re.findall(r"^sbatch call: (sbatch .*)$", out.stdout, flags=re.M)  # --verbose shows them
    assert out.returncode != 0, f"a GPU job ran on a cluster without GPUs:\n{out.stdout[-5000:]}"
    assert len(calls) == 1, f"expected one sbatch for the group of {len(targets)} GPU runs, got {calls}"
    assert " --gpus=1 " in calls[0], calls[0]
    uuid = re.search(r"SLURM run ID: (\S+)", out.stdout).group(1)
    assert not cluster.run("sacct", "-X", "-n", "--name", uuid).strip(), "SLURM accepted a GPU job without GPUs"
