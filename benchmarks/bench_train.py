"""Overhead of ``traindyn.train.train`` with MLflow tracking over a bare PyTorch loop; prints one JSON object.

Side by side in one process, on the same model, data and batches:
  (a) the pipeline: ``traindyn.track.job_run`` on a temporary sqlite store (created with
      ``init_store`` beforehand; the spec's params, then every metrics.parquet row logged
      after training, as ``traindyn train`` does), around ``traindyn.train.train`` with
      evaluation and checkpoints as configured, no spectra callbacks;
  (b) a bare loop: the model and optimizer from ``traindyn.train.build``, batches drawn with
      the loop's scheme (``randint`` indices into the training split from ``Generator(seed)``),
      forward, backward, step; no eval, no checkpoint, no logging.
Both include loading the dataset and building the model. Each repeat runs both, alternating
which goes first; the median over repeats is reported. Components of (a) are timed by
wrapping the loop's private helpers (``RunData``, ``build``, ``_evaluate``, ``_checkpoint``,
``_write_outputs``); what is left of ``train`` is the step loop itself.

Usage: python benchmarks/bench_train.py [--data-dir results/data/fashion-mnist] [--steps 1000]
       [--width 256] [--depth 2] [--repeats 3] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from traindyn.config import TrackingConfig, load_config
from traindyn.data import load_images, load_tokens, read_manifest
from traindyn.train import RunSpec, build, train
from traindyn.train import loop as _loop

TARGET_OVERHEAD = 0.10


def log(msg: str) -> None:
    print(f"[bench_train] {msg}", file=sys.stderr, flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- timing hooks


class _Timers:
    """Wraps the loop's helpers (module globals looked up at call time) to time them."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._saved: dict[str, object] = {}

    def _wrap(self, name: str, key: str):
        fn = getattr(_loop, name)

        def timed(*args, **kwargs):
            _sync(self.device)
            t0, c0 = time.perf_counter(), time.process_time()
            result = fn(*args, **kwargs)
            _sync(self.device)
            self.seconds[key] += time.perf_counter() - t0
            self.cpu_seconds[key] += time.process_time() - c0
            self.calls[key] += 1
            return result

        self._saved[name] = fn
        setattr(_loop, name, timed)

    def __enter__(self):
        self._wrap("RunData", "setup_data")
        self._wrap("build", "setup_model")
        self._wrap("_evaluate", "eval")
        self._wrap("_checkpoint", "checkpoint")
        self._wrap("_write_outputs", "outputs")
        return self

    def __exit__(self, *exc):
        for name, fn in self._saved.items():
            setattr(_loop, name, fn)


# ----------------------------------------------------------------------------- (a) and (b)


def tracking_config(root: Path, deferred: bool) -> TrackingConfig:
    overrides = [f"tracking.uri=sqlite:///{root}/mlflow.db", f"tracking.artifact_root={root}/mlartifacts"]
    if "defer" in TrackingConfig.__dataclass_fields__:  # deferred records (tracking.json) are newer
        overrides.append(f"tracking.defer={json.dumps(['train'] if deferred else [])}")
    return load_config([], overrides)


def run_pipeline(spec: RunSpec, data_dir: Path, run_dir: Path, cfg, device: torch.device,
                 deferred: bool) -> dict:  # fmt: skip
    """(a): ``train`` inside a tracked job, as the ``train`` CLI runs it."""
    import pandas as pd

    from traindyn.track import job_run

    kwargs = {"record_dir": run_dir} if deferred and "record_dir" in inspect.signature(job_run).parameters else {}
    with _Timers(device) as timers:
        t0, c0 = time.perf_counter(), time.process_time()
        with job_run(cfg.tracking, "train", spec.run, {"study": spec.study, "run": spec.run}, cfg.hash,
                     **kwargs) as job:  # fmt: skip
            job.log_params(spec.to_dict())
            t_train, c_train = time.perf_counter(), time.process_time()
            final = train(spec, data_dir, run_dir, device=device, progress=False)
            _sync(device)
            t_train, c_train = time.perf_counter() - t_train, time.process_time() - c_train
            metrics = pd.read_parquet(run_dir / "metrics.parquet")
            job.log_metric_rows(list(zip(metrics["metric"], metrics["value"], metrics["step"], strict=True)))
            job.set_tags({"diverged": final["diverged"], "device": final["device"]})
            job.log_artifact(run_dir / "final.json")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    s, c = dict(timers.seconds), dict(timers.cpu_seconds)
    setup = s["setup_data"] + s["setup_model"]
    steps = t_train - setup - s["eval"] - s["checkpoint"] - s["outputs"]
    losses = metrics[metrics.metric == "train_loss_batch"].value.tolist()
    return {
        "wall_s": wall,
        "train_s": t_train,
        "setup_s": setup,
        "steps_s": steps,
        "eval_s": s["eval"],
        "eval_calls": timers.calls["eval"],
        "checkpoint_s": s["checkpoint"],
        "checkpoint_calls": timers.calls["checkpoint"],
        "outputs_s": s["outputs"],
        "tracking_s": wall - t_train,
        "metric_rows": len(metrics),
        "cpu_wall_s": cpu,
        "cpu_train_s": c_train,
        "cpu_setup_s": c["setup_data"] + c["setup_model"],
        "cpu_steps_s": c_train - sum(c[k] for k in ("setup_data", "setup_model", "eval", "checkpoint", "outputs")),
        "cpu_eval_s": c["eval"],
        "cpu_checkpoint_s": c["checkpoint"],
        "cpu_outputs_s": c["outputs"],
        "cpu_tracking_s": cpu - c_train,
        "losses": losses,
    }


def run_bare(spec: RunSpec, data_dir: Path, device: torch.device) -> dict:
    """(b): the same model, optimizer and batches in a plain loop."""
    t0, c0 = time.perf_counter(), time.process_time()
    manifest = read_manifest(data_dir)
    if manifest["kind"] == "text":
        tokens = load_tokens(data_dir, "train")[0].to(device)
        dims = {"vocab_size": manifest["vocab_size"], "block_size": spec.context}
    else:
        x, y = (t.to(device) for t in load_images(data_dir, "train"))
        c, h, w = manifest["shape"]
        dims = {"in_dim": c * h * w, "out_dim": len(manifest["classes"]), "in_channels": c, "image_size": h}
    model, optimizer = build(spec, dims, device)
    model.train()
    gen = torch.Generator().manual_seed(spec.seed)
    _sync(device)
    t_steps, c_steps = time.perf_counter(), time.process_time()
    losses = []
    for _ in range(spec.steps):
        if manifest["kind"] == "text":
            starts = torch.randint(0, len(tokens) - spec.context - 1, (spec.batch_size,), generator=gen)
            seq = tokens[(starts[:, None] + torch.arange(spec.context + 1)).to(device)]  # (B, T+1)
            xb, yb = seq[:, :-1], seq[:, 1:]
        else:
            idx = torch.randint(0, len(y), (spec.batch_size,), generator=gen).to(device)
            xb, yb = x[idx], y[idx]  # (B, C, H, W), (B,)
        out = model(xb)
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), yb.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    _sync(device)
    end, c_end = time.perf_counter(), time.process_time()
    return {"wall_s": end - t0, "setup_s": t_steps - t0, "steps_s": end - t_steps, "cpu_wall_s": c_end - c0,
            "cpu_setup_s": c_steps - c0, "cpu_steps_s": c_end - c_steps,
            "losses": torch.stack(losses).tolist()}  # fmt: skip


# ----------------------------------------------------------------------------- main


def make_spec(args, data_dir: Path) -> RunSpec:
    text = read_manifest(data_dir)["kind"] == "text"
    model = {"arch": "gpt", "width": args.width, "depth": args.depth, "n_heads": 4} if text else \
        {"arch": "mlp", "width": args.width, "depth": args.depth}  # fmt: skip
    # The scaling study's training defaults (workflow/schemas/config.schema.yaml).
    return RunSpec(
        study="bench", run=f"sp-w{args.width}-d{args.depth}-lr{args.lr:g}-s0", dataset=data_dir.name,
        model=model, param="sp", base_width=args.width, depth_alpha=None, optimizer="sgd", lr=args.lr,
        momentum=0.0, weight_decay=0.0, loss="xent", steps=args.steps, batch_size=args.batch_size,
        schedule="constant", warmup_steps=0, eval_every=args.eval_every, eval_examples=args.eval_examples,
        checkpoint_every=args.checkpoint_every or max(1, args.steps // 4), loss_cap=20.0, seed=0,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("results/data/fashion-mnist"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1)
    # Evaluation and batch size as the scaling study runs them (the schema's defaults).
    study = load_config([]).raw["scaling"]["training"]
    parser.add_argument("--batch-size", type=int, default=study["batch_size"])
    parser.add_argument("--eval-every", type=int, default=study["eval_every"])
    parser.add_argument("--eval-examples", type=int, default=study["eval_examples"])
    parser.add_argument("--checkpoint-every", type=int, default=0, help="0: steps // 4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--live", dest="deferred", action="store_false",
                        help="log live to the sqlite store instead of the pipeline default, a deferred record")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = _loop.default_device() if args.device == "auto" else torch.device(args.device)
    data_dir = args.data_dir.resolve()
    spec = make_spec(args, data_dir)
    t_start = time.perf_counter()

    t0 = time.perf_counter()
    import mlflow.tracking  # noqa: F401 - a one-off cost every tracked job pays; reported apart

    mlflow_import = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp:
        root = Path(tmp)
        cfg = tracking_config(root, args.deferred)
        from traindyn.track import init_store

        t0 = time.perf_counter()
        init_store(cfg.tracking)
        store_init = time.perf_counter() - t0
        log(f"warm-up ({spec.run} on {data_dir.name}, {device})")
        warm = RunSpec.from_dict({**spec.to_dict(), "steps": 4, "eval_every": 2, "checkpoint_every": 2})
        run_pipeline(warm, data_dir, root / "warm", cfg, device, args.deferred)
        run_bare(warm, data_dir, device)
        a_runs, b_runs = [], []
        for i in range(args.repeats):
            order = ("a", "b") if i % 2 == 0 else ("b", "a")
            for which in order:
                if which == "a":
                    a_runs.append(run_pipeline(spec, data_dir, root / f"run{i}", cfg, device, args.deferred))
                else:
                    b_runs.append(run_bare(spec, data_dir, device))
            log(f"repeat {i + 1}/{args.repeats}: a {a_runs[-1]['wall_s']:.2f} s, b {b_runs[-1]['wall_s']:.2f} s")

    def median(runs, key):
        return statistics.median(r[key] for r in runs)

    a = {k: median(a_runs, k) for k in a_runs[0] if k != "losses"}
    b = {k: median(b_runs, k) for k in b_runs[0] if k != "losses"}
    extra = {
        "setup": a["setup_s"] - b["setup_s"],
        "eval": a["eval_s"],
        "checkpoint": a["checkpoint_s"],
        "outputs": a["outputs_s"],
        "tracking": a["tracking_s"],
        "step_loop": a["steps_s"] - b["steps_s"],
    }
    extra_cpu = {
        "setup": a["cpu_setup_s"] - b["cpu_setup_s"],
        "eval": a["cpu_eval_s"],
        "checkpoint": a["cpu_checkpoint_s"],
        "outputs": a["cpu_outputs_s"],
        "tracking": a["cpu_tracking_s"],
        "step_loop": a["cpu_steps_s"] - b["cpu_steps_s"],
    }
    out = {
        "benchmark": "traindyn.train.train + MLflow tracking vs a bare PyTorch loop",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "spec": {k: v for k, v in spec.to_dict().items() if k not in ("extra",)},
        "data_dir": str(data_dir),
        "repeats": args.repeats,
        "tracking": "deferred record" if args.deferred else "sqlite MLflow store",
        "same_batches_same_losses": all(r["losses"] == b_runs[0]["losses"] for r in a_runs + b_runs),
        "a_pipeline_s": a,
        "b_bare_s": b,
        "overhead_ratio": a["wall_s"] / b["wall_s"] - 1,
        "overhead_ratio_without_tracking": a["train_s"] / b["wall_s"] - 1,
        # A tracked job process also imports MLflow once (the store exists already).
        "overhead_ratio_with_mlflow_import": None if args.deferred else (a["wall_s"] + mlflow_import) / b["wall_s"] - 1,
        # Process CPU time: less sensitive to other jobs on a shared machine than wall time.
        "overhead_ratio_cpu_time": a["cpu_wall_s"] / b["cpu_wall_s"] - 1,
        "target_overhead": TARGET_OVERHEAD,
        "meets_target": a["wall_s"] / b["wall_s"] - 1 <= TARGET_OVERHEAD,
        "overhead_components_s": extra,
        "overhead_components_share_of_b": {k: v / b["wall_s"] for k, v in extra.items()},
        "overhead_components_cpu_share_of_b": {k: v / b["cpu_wall_s"] for k, v in extra_cpu.items()},
        "one_off_s": {"mlflow_import": mlflow_import, "init_store": store_init},
        "all_wall_s": {"a": [r["wall_s"] for r in a_runs], "b": [r["wall_s"] for r in b_runs]},
        "total_s": time.perf_counter() - t_start,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
