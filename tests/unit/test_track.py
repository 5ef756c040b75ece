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
