import json
import multiprocessing as mp

from traindyn.config import load_config
from traindyn.track import PARENT_ENV, init_store, job_run, start_invocation


def _job(uri, artifacts, index, parent):
    import os

    os.environ[PARENT_ENV] = parent
    cfg = load_config([], [f"tracking.uri={uri}", f"tracking.artifact_root={artifacts}"])
    with job_run(cfg.tracking, "train", f"run-{index}", {"run": f"run-{index}"}, cfg.hash) as job:
        job.log_params({"index": index, "nested": {"lr": 0.1 * index}})
        for step in range(20):
            job.log_metrics({"loss": 1.0 / (step + 1) + index, "acc": step / 20}, step=step)
        job.log_metric_rows([("sharpness", float(s * index), s) for s in range(200)])


def test_four_jobs_logging_at_once_lose_nothing(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_config([], [f"tracking.uri={uri}", f"tracking.artifact_root={tmp_path}/art"])
    init_store(cfg.tracking)  # once, before the parallel jobs
    parent = start_invocation(cfg.tracking, "snakemake:test", {})
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_job, args=(uri, f"{tmp_path}/art", i, parent)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'train'")
    assert sorted(r.data.tags["run_id"] for r in runs) == [f"run-{i}" for i in range(4)]
    for run in runs:
        i = int(run.data.tags["run_id"].split("-")[1])
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.params["nested.lr"] == str(0.1 * i)
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 20
        history = client.get_metric_history(run.info.run_id, "sharpness")
        assert sorted(m.step for m in history) == list(range(200))
        assert all(m.value == m.step * i for m in history)


def test_failed_job_is_marked_failed(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = load_config([], [f"tracking.uri={uri}", f"tracking.artifact_root={tmp_path}/art"])
    try:
        with job_run(cfg.tracking, "data", "broken", {}, cfg.hash):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"


def _deferred_job(cfg, run_dir, stage, name, n_params, n_rows):
    # What a deferred job writes: its record, beside the files it logs as artifacts.
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "final.json").write_text('{"ok": true}')
    with job_run(cfg.tracking, stage, name, {"run": name}, cfg.hash, record_dir=run_dir) as job:
        job.log_params({"spec": {f"p{i}": i for i in range(n_params)}})
        job.log_metric_rows([("loss", 1.0 / (s + 1), s) for s in range(n_rows)] + [("nan", float("nan"), 0)])
        job.set_tags({"diverged": False})
        job.log_artifact(run_dir / "final.json")


def test_track_stage_imports_every_record_of_a_study_once(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from traindyn.cli import main
    from traindyn.studies import study_runs
    from traindyn.track import study_records

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = [f"tracking.uri={uri}", f"tracking.artifact_root={tmp_path}/art"]
    cfg = load_config([], overrides)
    init_store(cfg.tracking)
    ids = list(study_runs(cfg.raw, "scaling"))
    # One run past MLflow's batch limits (100 params, 1000 entities a call), one with a later
    # stage's record in a subfolder, one whose job wrote no record (tracking live for it).
    _deferred_job(cfg, tmp_path / "runs" / ids[0], "train", ids[0], n_params=150, n_rows=2500)
    _deferred_job(cfg, tmp_path / "runs" / ids[1], "train", ids[1], n_params=3, n_rows=10)
    _deferred_job(cfg, tmp_path / "runs" / ids[1] / "cmdfit", "cmdfit", ids[1], n_params=2, n_rows=5)
    (tmp_path / "runs" / ids[2]).mkdir(parents=True)
    records = study_records([tmp_path / "runs" / i for i in ids])
    assert [p.relative_to(tmp_path / "runs").as_posix() for p in records] == [
        f"{ids[0]}/tracking.json", f"{ids[1]}/tracking.json", f"{ids[1]}/cmdfit/tracking.json"]  # fmt: skip
    args = ["track", "--study", "scaling", "--runs-dir", str(tmp_path / "runs"), "--out", "tracked.json", *overrides]
    assert main(args) == 0
    assert json.loads((tmp_path / "tracked.json").read_text())["imported"] == 3
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    imported = client.search_runs([exp.experiment_id], "tags.`traindyn.record_id` != ''")
    assert sorted(r.info.run_name for r in imported) == sorted([f"train:{ids[0]}", f"train:{ids[1]}", f"cmdfit:{ids[1]}"])
    big = next(r for r in imported if r.info.run_name == f"train:{ids[0]}")
    assert big.info.status == "FINISHED" and big.data.tags["diverged"] == "False"
    assert len(big.data.params) == 150 and big.data.params["spec.p149"] == "149"
    history = client.get_metric_history(big.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(2500))
    assert "nan" not in big.data.metrics  # non-finite values are not data
    assert [a.path for a in client.list_artifacts(big.info.run_id)] == ["final.json"]
    # Idempotent: a second import adds nothing.
    assert main(args) == 0
    assert json.loads((tmp_path / "tracked.json").read_text()) == {
        "study": "scaling", "records": 3, "imported": 0, "uri": uri}  # fmt: skip
    assert len(client.search_runs([exp.experiment_id], "tags.`traindyn.record_id` != ''")) == 3


def test_tracking_benchmark_fills_both_stores_alike():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "bench_tracking.py", "--records", "3", "--repeats", "1"],
                         cwd=root / "benchmarks", capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["same_store_contents"] is True
    assert all(t > 0 for t in result["seconds_per_record"].values())
