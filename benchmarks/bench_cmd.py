"""CMD speed and memory, and the cost of capturing a trajectory; prints one JSON object.

Three measurements, each on one core (``OMP_NUM_THREADS=1``, one torch thread):
  (a) post-hoc CMD fit of a synthetic N x T trajectory (default N = 1M, T = 100, K = 2000,
      M = 10) read from a memory-mapped file, in a fresh child process so that its peak
      resident memory (``ru_maxrss``, which counts the mapped trajectory pages it touches)
      is the fit's own; targets: <= 30 s and <= 3x the trajectory's size;
  (b) the online update of that fit per new snapshot against a full refit (a and b on all
      T snapshots with the same modes, and the whole CMD fit), side by side;
  (c) training a ~1M-parameter MLP on the digits dataset for ``--steps`` steps with and
      without a trajectory of ``--snapshots`` rows (repeats alternate the order; medians of
      wall and of process CPU time); target: <= 10% slower on both.

Usage: python benchmarks/bench_cmd.py [--n 1000000] [--t 100] [--k 2000] [--m 10]
       [--steps 500] [--snapshots 100] [--repeats 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

TARGET_FIT_SECONDS = 30.0
TARGET_MEMORY_RATIO = 3.0
TARGET_CAPTURE_OVERHEAD = 0.10


def log(msg: str) -> None:
    print(f"[bench_cmd] {msg}", file=sys.stderr, flush=True)


def write_trajectory(path: Path, n: int, t: int, modes: int, seed: int = 0) -> None:
    """A synthetic trajectory: affine images of random-walk modes plus noise, written in chunks."""
    rng = np.random.default_rng(seed)
    refs = np.cumsum(rng.normal(size=(t, modes)), axis=0)
    w = np.memmap(path, np.float32, "w+", shape=(t, n))
    for lo in range(0, n, 1 << 18):
        c = min(n, lo + (1 << 18)) - lo
        lab = rng.integers(0, modes, c)
        w[:, lo : lo + c] = (rng.normal(size=c) * refs[:, lab] + rng.normal(size=c)
                             + 0.05 * rng.normal(size=(t, c)))  # fmt: skip
    w.flush()


def child_fit(path: str, n: int, t: int, k: int, m: int) -> None:
    """Run in a fresh process: the fit, the online update and a refit; prints JSON."""
    from traindyn.cmd import OnlineCMD, assign_and_fit, fit_cmd

    w = np.memmap(path, np.float32, "r", shape=(t, n))
    offsets = np.linspace(0, n, 5).astype(np.int64)  # four layers
    start = time.perf_counter()
    fit = fit_cmd(w, offsets, k, m, seed=0)
    fit_s = time.perf_counter() - start
    rss_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    assign_and_fit(w, fit.refs, labels=fit.labels)
    refit_ab_s = time.perf_counter() - start
    online = OnlineCMD.from_fit(fit, w[: t - 5])
    times = []
    for row in range(t - 5, t):
        start = time.perf_counter()
        online.update(w[row])
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    online.coefficients()
    coef_s = time.perf_counter() - start
    print(json.dumps({"fit_seconds": fit_s, "peak_rss_bytes_fit": rss_fit,
                      "peak_rss_bytes_all": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "modes_found": fit.n_modes, "refit_ab_seconds": refit_ab_s,
                      "online_update_seconds_per_snapshot": statistics.median(times),
                      "online_coefficients_seconds": coef_s, "online_state_floats": online.state_floats()}))  # fmt: skip


def capture_overhead(steps: int, snapshots: int, repeats: int) -> dict:
    """Median training time with and without the trajectory for a ~1M-parameter MLP."""
    import torch

    from traindyn.config import load_config
    from traindyn.data import prepare_dataset
    from traindyn.train import RunSpec, Trajectory, train

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_cmd_"))
    data = tmp / "digits"
    prepare_dataset("digits", load_config([], []).data, data)
    stride = max(1, steps // snapshots)
    spec = RunSpec(study="bench", run="mlp-1m", dataset="digits", model={"arch": "mlp", "width": 1000, "depth": 2},
                   param="sp", base_width=1000, depth_alpha=None, optimizer="sgd", lr=0.05, momentum=0.0,
                   weight_decay=0.0, loss="xent", steps=steps, batch_size=128, schedule="constant",
                   warmup_steps=0, eval_every=steps, eval_examples=256, checkpoint_every=0, loss_cap=1e9,
                   seed=0, fixed_batch_size=64)  # fmt: skip
    seconds = {"plain": [], "trajectory": []}
    cpu = {"plain": [], "trajectory": []}  # process CPU time: less sensitive to a contended machine
    n_params = rows = None
    for rep in range(repeats):
        for kind in (("plain", "trajectory") if rep % 2 == 0 else ("trajectory", "plain")):
            run_spec = spec if kind == "plain" else RunSpec(**{**spec.to_dict(), "snapshot_every": stride})
            start, start_cpu = time.perf_counter(), time.process_time()
            train(run_spec, data, tmp / f"{kind}-{rep}", progress=False)
            seconds[kind].append(time.perf_counter() - start)
            cpu[kind].append(time.process_time() - start_cpu)
            if kind == "trajectory":
                traj = Trajectory(tmp / f"{kind}-{rep}/trajectory")
                n_params, rows = traj.n_params, len(traj)
    plain, captured = statistics.median(seconds["plain"]), statistics.median(seconds["trajectory"])
    cpu_plain, cpu_captured = statistics.median(cpu["plain"]), statistics.median(cpu["trajectory"])
    return {"cpu_seconds_plain": cpu_plain, "cpu_seconds_with_trajectory": cpu_captured,
            "cpu_overhead": cpu_captured / cpu_plain - 1, "all_cpu_seconds": cpu,"n_params": n_params, "steps": steps, "snapshots": rows, "trajectory_bytes": rows * n_params * 4,
            "seconds_plain": plain, "seconds_with_trajectory": captured, "overhead": captured / plain - 1,
            "target_overhead": TARGET_CAPTURE_OVERHEAD,
            "meets_target": max(captured / plain, cpu_captured / cpu_plain) - 1 <= TARGET_CAPTURE_OVERHEAD,
            "all_seconds": seconds}  # fmt: skip


def main() -> None:
    """Parse options, run the three measurements, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--t", type=int, default=100)
    parser.add_argument("--k", type=int, default=2000)
    parser.add_argument("--m", type=int, default=10)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--snapshots", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-capture", action="store_true")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, n, t, k, m = args.child
        child_fit(path, int(n), int(t), int(k), int(m))
        return
    out: dict = {"threads": 1}
    with tempfile.TemporaryDirectory(prefix="bench_cmd_") as tmp:
        path = Path(tmp) / "weights.f32"
        log(f"writing a {args.t} x {args.n} trajectory")
        write_trajectory(path, args.n, args.t, modes=args.m)
        size = args.t * args.n * 4
        log("post-hoc fit in a child process")
        res = subprocess.run([sys.executable, __file__, "--child", str(path), str(args.n), str(args.t),
                              str(args.k), str(args.m)], capture_output=True, text=True, check=True)  # fmt: skip
        fit = json.loads(res.stdout.strip().splitlines()[-1])
    fit.update(n=args.n, t=args.t, k=args.k, m=args.m, trajectory_bytes=size,
               memory_ratio=fit["peak_rss_bytes_fit"] / size,
               meets_time_target=fit["fit_seconds"] <= TARGET_FIT_SECONDS,
               meets_memory_target=fit["peak_rss_bytes_fit"] <= TARGET_MEMORY_RATIO * size,
               online_speedup_vs_refit_ab=fit["refit_ab_seconds"] / fit["online_update_seconds_per_snapshot"],
               online_speedup_vs_full_fit=fit["fit_seconds"] / fit["online_update_seconds_per_snapshot"])  # fmt: skip
    out["posthoc_fit"] = fit
    if not args.skip_capture:
        log("trajectory capture overhead")
        out["capture"] = capture_overhead(args.steps, args.snapshots, args.repeats)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
