"""Importing deferred MLflow records: traindyn's batched import vs MLflow's client call by call.

Each record has the shape of one default scaling-study run's (``tracking.json``): the run's
tags, 26 params, 524 metric rows (every step's batch loss and six evaluations of four
metrics) and one artifact (final.json). The values are made up: what is timed is the store.
Both sides write the same records into fresh sqlite stores on local disk, alternating:

  - traindyn: ``traindyn.track.import_records`` (one ``log_batch`` for params and metrics,
    artifacts straight to the run's artifact repository);
  - MLflow client: ``MlflowClient.create_run``, ``log_batch`` for the params, ``log_batch``
    for the metrics, ``log_artifact``, ``set_terminated``: the API used the plain way.

Prints seconds per record for each, their ratio, and checks that both stores hold the same
runs, params and metric histories.

Usage: python benchmarks/bench_tracking.py [--records 100] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from traindyn.config import load_config
from traindyn.track import import_records, init_store
from traindyn.track.mlflow_store import _flatten, _retry
from traindyn.track.records import JobRecord


def make_records(folder: Path, n: int) -> list[Path]:
    """``n`` records shaped like a default scaling run's, each with its final.json."""
    paths = []
    for i in range(n):
        run = folder / f"run-{i}"
        run.mkdir(parents=True)
        (run / "final.json").write_text(json.dumps({"run": f"run-{i}", "final_train_loss": 0.4}))
        rec = JobRecord(run / "tracking.json", f"train:run-{i}", {"stage": "train", "run_id": f"run-{i}"})
        rec.log_params({"study": "scaling", "run": f"run-{i}", "lr": 0.01 * (i + 1), "seed": i % 5,
                        "model": {"arch": "mlp", "width": 32, "depth": 2},
                        "extra": {"sweep": "width"}, **{f"key{k}": k for k in range(18)}})  # fmt: skip
        rows = [("train_loss_batch", 2.3 / (1 + s / 50), s) for s in range(500)]
        rows += [(k, 1.0 / (1 + e), 100 * e) for e in range(6) for k in ("train_loss", "train_acc", "val_loss", "val_acc")]
        rec.log_metric_rows(rows)
        rec.log_artifact(run / "final.json")
        rec.save("FINISHED")
        paths.append(run / "tracking.json")
    return paths


def client_import(cfg, paths: list[Path]) -> None:
    """The same records through MlflowClient's API, one call per kind."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.uri)
    exp = client.get_experiment_by_name(cfg.experiment).experiment_id
    for p in paths:
        rec = json.loads(p.read_text())
        run = client.create_run(exp, start_time=rec["start_time"], run_name=rec["run_name"],
                                tags={**rec["tags"], "traindyn.record_id": rec["record_id"]})  # fmt: skip
        flat: dict[str, str] = {}
        _flatten("", rec["params"], flat)
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flat.items()])
        metrics = [Metric(k, v, t, s) for k, v, s, t in rec["metrics"] if math.isfinite(v)]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run.info.run_id, metrics=metrics[i : i + 1000])
        for path, artifact_path in rec["artifacts"]:
            client.log_artifact(run.info.run_id, path, artifact_path)
        client.set_terminated(run.info.run_id, rec["status"], end_time=rec["end_time"])


def store_contents(cfg) -> list:
    """(run name, params, metric histories) of every run in the store, sorted."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.uri)
    exp = client.get_experiment_by_name(cfg.experiment).experiment_id
    out = []
    for r in _retry(client.search_runs, [exp], max_results=10_000):
        hist = {k: sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, k))
                for k in r.data.metrics}  # fmt: skip
        arts = [a.path for a in client.list_artifacts(r.info.run_id)]
        out.append((r.info.run_name, r.info.status, dict(r.data.params), hist, arts))
    return sorted(out, key=lambda x: x[0])


def main() -> None:
    """Run the benchmark and print its JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    times: dict[str, list[float]] = {"traindyn": [], "mlflow_client": []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_records(Path(tmp) / "runs", args.records)
        last = {}
        for r in range(args.repeats):
            for name in list(times) if r % 2 == 0 else list(times)[::-1]:
                root = Path(tmp) / f"{name}-{r}"
                cfg = load_config([], [f"tracking.uri=sqlite:///{root}/mlflow.db",
                                       f"tracking.artifact_root={root}/art"]).tracking  # fmt: skip
                init_store(cfg)  # creating the store is not part of an import
                start = time.perf_counter()
                if name == "traindyn":
                    assert import_records(cfg, paths) == len(paths)
                else:
                    client_import(cfg, paths)
                times[name].append(time.perf_counter() - start)
                last[name] = cfg
        same = store_contents(last["traindyn"]) == store_contents(last["mlflow_client"])
    per = {k: statistics.median(v) / args.records for k, v in times.items()}
    print(json.dumps({
        "records": args.records, "repeats": args.repeats,
        "seconds_per_record": per, "seconds_all": times,
        "speedup_vs_mlflow_client": per["mlflow_client"] / per["traindyn"],
        "same_store_contents": same,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
