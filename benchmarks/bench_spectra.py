"""Benchmark of traindyn.spectra against the strongest peers; prints one JSON object.

Sections (each comparison on the same model and batch in one run):
- sharpness_along_training: the pipeline's workload. The scaling study's sharpness runs
  at width 512 (MLP depth 2, 668,672 parameters, Fashion-MNIST, fixed batch 256; SP and
  muP, cross-entropy and MSE) trained by traindyn's loop, measured every 50 steps; at
  every state each method must reach 1e-3 relative error on the top Hessian eigenvalue
  against a float64 reference. Ours (own stop at tol=1e-3, cold and warm starts; and
  ARPACK's residual stop tuned on ARPACK's tol ladder, per run and once, as ARPACK is),
  SciPy eigsh (ARPACK) on a curvlinops Hessian operator and on ours (ncv swept, each
  ncv's loosest working tol), PyHessian 0.1 and hessian-eigenthings (both with an
  oracle stop); products and wall time per method, ratios to ours
  (benchmarks/spectra_workload.py).
- lanczos_step: one Lanczos step vs one Hessian-vector product at P = 668,672.
- hvp_cost: one Hessian-vector product vs one gradient, for the library's retained
  double backward and the torch.func alternatives; also J v by double vjp vs forward AD.
- ntk_matrix_free_vs_explicit: NTK top eigenvalue, matrix-free Lanczos vs the explicit
  Jacobian (torch.func.jacrev), time and peak RSS in a subprocess each; and at >= 1M
  parameters with n = 512 the matrix-free path only.
- module_ntk: every module's lambda_max (one pass, split by module) vs one full-NTK
  lambda_max on the same probes, for an MLP's layers and a tiny transformer's heads.

The peers are installed by `make bench` (pinned, --no-deps). The machine's load is
recorded at start and end: timings on a shared machine are noisy, ratios within one run
(methods interleaved state by state) less so.

Usage: python benchmarks/bench_spectra.py [--quick] [--threads 1] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from spectra_workload import (
    CALLBACK_WARM,
    TARGET,
    _load,
    compare_on_trajectory,
    prepare_fashion,
    reference,
    run_arpack_settings,
    trajectory,
    workload_specs,
)
from timing import interleaved_times, median_time
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vjp

from traindyn.spectra import (
    Jacobian,
    LanczosWorkspace,
    hessian_operator,
    lanczos,
    module_ntk,
    ntk_kernel,
    ntk_operator,
)

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench_spectra {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- data, models


def digits(n: int, side: int = 28, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's bundled 8x8 digits upsampled to side x side, standardised; else synthetic."""
    try:
        from sklearn.datasets import load_digits

        data = load_digits()
        x = torch.tensor(data.images, dtype=torch.float32)[:, None]  # (1797, 1, 8, 8)
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        x = x.reshape(len(x), -1)
        y = torch.tensor(data.target)
    except ImportError:  # pragma: no cover
        gen = torch.Generator().manual_seed(seed)
        x, y = torch.randn(1797, side * side, generator=gen), torch.randint(0, 10, (1797,), generator=gen)
    x = (x - x.mean()) / x.std()
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    idx = idx.repeat(math.ceil(n / len(x)))[:n]
    return x[idx].contiguous(), y[idx].contiguous()


def mlp(widths: list[int], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def half_mse(f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """0.5 * ||f - onehot(y)||^2 summed over classes, mean over the batch."""
    return 0.5 * (f - F.one_hot(y, f.shape[-1]).to(f.dtype)).pow(2).sum(-1).mean()


class Head(nn.Module):
    def __init__(self, d: int, dh: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, dh), nn.Linear(d, dh), nn.Linear(d, dh)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = (self.q(x) @ self.k(x).transpose(-2, -1)) / self.q.out_features**0.5  # (B, T, T)
        return att.softmax(-1) @ self.v(x)  # (B, T, dh)


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.heads = nn.ModuleList(Head(d, d // heads) for _ in range(heads))
        self.o = nn.Linear(d, d)
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.o(torch.cat([head(h) for head in self.heads], -1))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class TinyTransformer(nn.Module):
    """Pre-LN transformer classifier with separate parameter tensors per head."""

    def __init__(self, vocab: int = 64, d: int = 64, heads: int = 4, layers: int = 2, seq: int = 16, classes: int = 10):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.randn(seq, d) * 0.02)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln, self.out = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos  # (B, T, d)
        for block in self.blocks:
            x = block(x)
        return self.out(self.ln(x).mean(1))  # (B, classes)


# ----------------------------------------------------------------------------- HVP cost


def bench_hvp_cost(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, repeats: int) -> dict:
    params = [p for p in model.parameters()]
    theta = {n: p.detach() for n, p in model.named_parameters()}

    def loss_of(p):
        return loss_fn(functional_call(model, p, (x,)), y)

    grad_fn = grad(loss_of)
    gen = torch.Generator().manual_seed(0)
    v_flat = torch.randn(sum(p.numel() for p in params), generator=gen)
    v = dict(zip(theta, v_flat.split([p.numel() for p in params]), strict=True))
    v = {n: t.view(theta[n].shape) for n, t in v.items()}

    def gradient():
        return torch.autograd.grad(loss_fn(model(x), y), params)

    t_build = median_time(lambda: hessian_operator(model, loss_fn, (x, y)), repeats)
    op = hessian_operator(model, loss_fn, (x, y))

    def double_backward_rebuilt():
        g = torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True)
        return torch.autograd.grad(g, params, grad_outputs=list(v.values()))

    times = interleaved_times(
        {
            "gradient": gradient,
            "retained_double_backward (library)": lambda: op(v_flat),
            "double_backward_rebuilt_each_call": double_backward_rebuilt,
            "forward_over_reverse (torch.func jvp of grad)": lambda: jvp(grad_fn, (theta,), (v,))[1],
            "reverse_over_reverse (torch.func vjp of grad)": lambda: vjp(grad_fn, theta)[1](v),
        },
        repeats,
    )
    t_grad = times.pop("gradient")
    # J v for Gauss-Newton / NTK products: double vjp on a retained graph vs forward AD.
    jac = Jacobian(model, x)
    jvp_times = interleaved_times(
        {
            "double_vjp_retained (library)": lambda: jac.jvp(v_flat),
            "forward_ad (torch.func.jvp)": lambda: jvp(lambda p: functional_call(model, p, (x,)), (theta,), (v,)),
        },
        repeats,
    )
    return {
        "n_params": len(v_flat),
        "batch": x.shape[0],
        "gradient_s": t_grad,
        "hvp_s": times,
        "hvp_over_gradient": {k: t / t_grad for k, t in times.items()},
        "library_hvp_over_gradient": times["retained_double_backward (library)"] / t_grad,
        "library_operator_build_s (once per operator, amortised)": t_build,
        "jvp_s": jvp_times,
    }


# ----------------------------------------------------------------------------- Lanczos step cost


def bench_lanczos_step(op, steps: tuple[int, ...], repeats: int) -> dict:
    """One Lanczos step (product + reorthogonalization + bookkeeping) vs one product alone.

    With a ``LanczosWorkspace`` kept between calls, as ``SpectraCallback`` keeps one (the
    headline), and with a fresh basis per call (its page faults included); a cold start
    (random vector) and ``tol=0`` so every call takes exactly m steps. ``reorth_steps``:
    how many of the m steps orthogonalised against the whole basis.
    """
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0))
    n_hvp = max(steps)
    workspace = LanczosWorkspace()
    fns = {"hvp": lambda: [op(v) for _ in range(n_hvp)]}
    for m in steps:
        fns[f"lanczos_{m}_steps"] = lambda m=m: lanczos(op, tol=0.0, max_iter=m, workspace=workspace)
        fns[f"fresh_{m}_steps"] = lambda m=m: lanczos(op, tol=0.0, max_iter=m)
    times = interleaved_times(fns, repeats)
    hvp = times["hvp"] / n_hvp
    out = {"n_params": op.dim, "dtype": str(op.dtype), "hvp_s": hvp}
    for m in steps:
        step = times[f"lanczos_{m}_steps"] / m
        out[f"step_s ({m} steps)"] = step
        out[f"step_over_hvp ({m} steps)"] = step / hvp
        out[f"overhead_over_hvp ({m} steps)"] = (step - hvp) / hvp
        out[f"fresh_basis_step_over_hvp ({m} steps)"] = times[f"fresh_{m}_steps"] / m / hvp
        out[f"reorth_steps ({m} steps)"] = lanczos(op, tol=0.0, max_iter=m, workspace=workspace).n_reorth
    return out


def summarise(trajectories: list[dict]) -> dict:
    """Totals over every trajectory per method family, and the issue's claims checked."""
    total: dict = {}

    def add(name, entry):
        slot = total.setdefault(name, {"products": 0, "seconds": 0.0, "all_within_target": True})
        slot["products"] += entry.get("products", 0)
        slot["seconds"] += entry.get("seconds", 0.0)
        slot["all_within_target"] &= bool(entry.get("all_within_target"))

    for t in trajectories:
        methods = t["methods"]
        for name, entry in methods.items():
            if name.startswith("ours") or not name.startswith("arpack"):
                add(name, entry)
        # Best ARPACK per trajectory (by products, ties by time), per operator.
        for backend in ("curvlinops", "traindyn-operator"):
            group = {k: v for k, v in methods.items()
                     if k.startswith("arpack") and backend in k and v.get("all_within_target")}
            if group:
                best = min(group, key=lambda k: (group[k]["products"], group[k]["seconds"]))
                add(f"best-tuned arpack ({backend})", group[best])
                fastest = min(group, key=lambda k: group[k]["seconds"])
                add(f"fastest arpack ({backend})", group[fastest])
            else:
                add(f"best-tuned arpack ({backend})", {"all_within_target": False})
    setting = best_single_setting(trajectories)
    if setting is not None:
        total["best single-setting arpack (traindyn-operator)"] = setting
    ours_setting = best_single_setting(trajectories, key="ours_residual_settings")
    if ours_setting is not None:
        total["best single-setting ours (ARPACK's residual stop)"] = ours_setting
    ours = total.get(f"ours (warm={CALLBACK_WARM})")  # the spectra callback's warm start
    claims = {}
    if ours:
        ar = total.get("best-tuned arpack (curvlinops)", {})
        fast = total.get("fastest arpack (curvlinops)", {})
        py = total.get("pyhessian 0.1 power iteration", {})
        claims = {
            "ours within target at every state": ours["all_within_target"],
            "products: best arpack (curvlinops) / ours": ar.get("products", 0) / ours["products"],
            "time: fastest arpack (curvlinops) / ours": fast.get("seconds", 0.0) / ours["seconds"],
            "products: pyhessian (oracle stop) / ours": py.get("products", 0) / ours["products"],
        }
        # The step on the workload: ours' Lanczos time (operator built) over its products' time.
        entries = [t["methods"][f"ours (warm={CALLBACK_WARM})"] for t in trajectories]
        product_s = sum(e.get("product_seconds", 0.0) for e in entries)
        if product_s > 0:
            claims["lanczos step / product, along the runs"] = \
                sum(e["lanczos_seconds"] for e in entries) / product_s
        if setting is not None:
            claims["products: best single-setting arpack / ours"] = setting["products"] / ours["products"]
        # The same stop (residual test) tuned the same way (ladder, against the reference):
        # solver against solver, hindsight on both sides.
        alike = total.get("ours (ARPACK's residual stop, tol tuned per run)", {})
        if alike.get("all_within_target"):
            claims["products: best arpack (curvlinops) / ours, same stop tuned alike (per run)"] = \
                ar.get("products", 0) / alike["products"]
            claims["time: fastest arpack (curvlinops) / ours, same stop tuned alike (per run)"] = \
                fast.get("seconds", 0.0) / alike["seconds"]
        if setting is not None and ours_setting is not None:
            claims["products: best single-setting arpack / ours, same stop at one tol"] = \
                setting["products"] / ours_setting["products"]
    return {"totals": total, "claims": claims}


def best_single_setting(trajectories: list[dict], key: str = "arpack_settings") -> dict | None:
    """The one setting with the fewest products that meets the target at every state of
    every trajectory, or None if none does: warm ARPACK's (ncv, tol) from
    ``run_arpack_settings``, or (``key="ours_residual_settings"``) our residual stop's tol."""
    names = set.intersection(*(set(t.get(key, {})) for t in trajectories)) if trajectories else set()
    best = None
    for name in sorted(names):
        entries = [t[key][name] for t in trajectories]
        if not all(e["all_within_target"] for e in entries):
            continue
        entry = {"setting": name, "products": sum(e["products"] for e in entries),
                 "seconds": sum(e["seconds"] for e in entries), "all_within_target": True,
                 "per_trajectory_products": [e["products"] for e in entries]}
        if best is None or (entry["products"], entry["seconds"]) < (best["products"], best["seconds"]):
            best = entry
    return best


def time_setting_on_curvlinops(specs: list, data_dir: Path, setting: str, n_states: int) -> dict:
    """The best single setting rerun on curvlinops' operator along every trajectory (its time)."""
    ncv, tol = (float(part.split("=")[1]) for part in setting.split(", "))
    total = {"setting": setting, "products": 0, "seconds": 0.0, "all_within_target": True}
    for spec in specs:
        model, batch, loss_fn, states = trajectory(spec, data_dir, every=50, n_states=n_states)
        refs = [reference(_load(model, w), loss_fn, batch) for w in states.values()]
        entry = run_arpack_settings(model, loss_fn, spec.loss, batch, states, refs, backend="curvlinops",
                                    settings=[(int(ncv), tol)])[setting]
        total["products"] += entry["products"]
        total["seconds"] += entry["seconds"]
        total["all_within_target"] &= entry["all_within_target"]
    return total


# ----------------------------------------------------------------------------- NTK (subprocesses)


def proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) on Linux >= 4.0: the peak then covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def ntk_child(method: str, width: list[int], n: int, threads: int) -> dict:
    """Runs in a fresh process: its peak RSS is this measurement's (torch's CPU allocations included)."""
    torch.set_num_threads(threads)
    model = mlp(width, seed=0)
    x, _ = digits(n)
    gc.collect()
    reset = reset_peak_rss()
    rss0 = proc_status_mb("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    extra = {}
    if method == "matrix_free":
        res = lanczos(ntk_operator(model, x), k=1, tol=1e-6, max_iter=100)
        lam, extra = float(res.eigenvalues[0]), {"n_matvec": res.n_matvec, "converged": res.converged}
    elif method == "explicit_jacrev":
        params = {k: p.detach() for k, p in model.named_parameters()}
        jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)  # name -> (n, D, *shape)
        j = torch.cat([g.reshape(n, g.shape[1], -1) for g in jac.values()], -1)  # (n, D, P)
        del jac
        kernel = torch.einsum("icp,jcp->ij", j.double(), j.double()) / n
        lam = float(torch.linalg.eigvalsh(kernel)[-1])
    elif method == "exact_per_sample (ntk_kernel)":
        lam = float(torch.linalg.eigvalsh(ntk_kernel(model, x))[-1])
    else:
        raise ValueError(method)
    elapsed = time.perf_counter() - t0
    peak = proc_status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "time_s": elapsed, "lambda_max": lam, "rss_before_mb": rss0, "peak_rss_mb": peak,
        "peak_increase_mb": peak - rss0,
        "peak_source": "VmHWM after clear_refs" if reset else "ru_maxrss (process lifetime)",
        "process_lifetime_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra,
    }


def run_child(method: str, width: list[int], n: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--child-width", ",".join(map(str, width)),
           "--child-n", str(n), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_ntk(width_small, n_small, width_large, n_large, threads) -> dict:
    small_p = n_params(mlp(width_small))
    small = {m: run_child(m, width_small, n_small, threads)
             for m in ("matrix_free", "explicit_jacrev", "exact_per_sample (ntk_kernel)")}
    mf, ex = small["matrix_free"], small["explicit_jacrev"]
    ratios = {}
    if "error" not in mf and "error" not in ex:
        ratios = {
            "time_explicit_over_matrix_free": ex["time_s"] / mf["time_s"],
            "peak_memory_explicit_over_matrix_free": ex["peak_increase_mb"] / max(mf["peak_increase_mb"], 1e-9),
            "lambda_max_rel_diff": abs(ex["lambda_max"] - mf["lambda_max"]) / ex["lambda_max"],
        }
    large_p = n_params(mlp(width_large))
    classes = width_large[-1]
    j_bytes = n_large * classes * large_p * 4
    large = run_child("matrix_free", width_large, n_large, threads)
    return {
        "feasible_size": {"widths": width_small, "n_params": small_p, "n": n_small,
                          "explicit_J_bytes": n_small * width_small[-1] * small_p * 4, **small, **ratios},
        "large": {
            "widths": width_large, "n_params": large_p, "n": n_large,
            "matrix_free": large,
            "explicit_jacrev": f"infeasible: J alone is {j_bytes / 2**30:.1f} GiB (n * C * P * 4 bytes) "
                               "before jacrev's intermediates; not attempted",
        },
    }


# ----------------------------------------------------------------------------- per-module NTK


def bench_module_ntk(model, x, modules, repeats: int, n_projections: int = 4) -> dict:
    everything = {"all": [n for n, _ in model.named_parameters()]}

    def one_pass_per_module():
        return [module_ntk(model, x, {m: names}, n_projections=n_projections) for m, names in modules.items()]

    times = interleaved_times(
        {
            "full": lambda: module_ntk(model, x, everything, n_projections=n_projections),
            "modules": lambda: module_ntk(model, x, modules, n_projections=n_projections),
            "naive": one_pass_per_module,
        },
        repeats,
    )
    t_full, t_modules, t_naive = times["full"], times["modules"], times["naive"]
    res = module_ntk(model, x, modules, n_projections=n_projections)
    full = module_ntk(model, x, everything, n_projections=n_projections)
    covered = sum(len(v) for v in modules.values()) == len(everything["all"])
    return {
        "n_params": n_params(model),
        "n_probes": x.shape[0],
        "n_modules": len(modules),
        "all_modules_one_pass_s": t_modules,
        "full_ntk_lambda_max_s": t_full,
        "ratio_all_modules_over_full": t_modules / t_full,
        "one_pass_per_module_s": t_naive,
        "ratio_one_pass_per_module_over_full": t_naive / t_full,
        "sum_of_modules_equals_full_rel_err": (
            float((res.Theta_full - full.Theta["all"]).norm() / full.Theta["all"].norm()) if covered else None
        ),
        "lambda_max_full": full.lambda_max["all"],
        "lambda_max_per_module": {m: round(v, 6) for m, v in res.lambda_max.items()},
    }


def transformer_modules(model: TinyTransformer) -> dict[str, list[str]]:
    modules: dict[str, list[str]] = {}
    head_names = set()
    for b, block in enumerate(model.blocks):
        for h in range(len(block.heads)):
            names = [f"blocks.{b}.heads.{h}.{w}.{kind}" for w in "qkv" for kind in ("weight", "bias")]
            modules[f"L{b}.H{h}"] = names
            head_names.update(names)
    modules["rest"] = [n for n, _ in model.named_parameters() if n not in head_names]
    return modules


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two trajectories of 3 states, smaller NTK and module-NTK cases (about 3 minutes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--data-dir", help="prepared fashion-mnist (default: prepared into a temp dir)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-width", help=argparse.SUPPRESS)
    parser.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        width = [int(w) for w in args.child_width.split(",")]
        print(json.dumps(ntk_child(args.child, width, args.child_n, args.threads)))
        return
    torch.set_num_threads(args.threads)
    quick = args.quick
    t_start = time.perf_counter()
    out: dict = {
        "benchmark": "traindyn.spectra",
        "quick": quick,
        "torch": torch.__version__,
        "threads": args.threads,
        "device": "cpu",
        "load_average_at_start": os.getloadavg(),
    }

    data_dir = Path(args.data_dir) if args.data_dir else prepare_fashion(Path(tempfile.mkdtemp()))
    specs = workload_specs()
    names = ["sp-xent", "mup-xent"] if quick else ["sp-xent", "mup-xent", "sp-mse", "mup-mse"]
    n_states = 3 if quick else 7
    ncvs = (5, 20) if quick else (3, 5, 8, 20)
    trajectories = []
    for name in names:
        log(f"sharpness along training: {specs[name].run}")
        trajectories.append(compare_on_trajectory(specs[name], data_dir, every=50, n_states=n_states,
                                                  ncvs=ncvs, max_hvp=400, log=log))
    summary = summarise(trajectories)
    setting = summary["totals"].get("best single-setting arpack (traindyn-operator)")
    if setting is not None:
        log(f"best single arpack setting on curvlinops: {setting['setting']}")
        timed = time_setting_on_curvlinops([specs[n] for n in names], data_dir, setting["setting"], n_states)
        summary["totals"]["best single-setting arpack (curvlinops)"] = timed
        ours = summary["totals"][f"ours (warm={CALLBACK_WARM})"]
        summary["claims"]["time: best single-setting arpack (curvlinops) / ours"] = timed["seconds"] / ours["seconds"]
        alike = summary["totals"].get("best single-setting ours (ARPACK's residual stop)")
        if alike is not None:
            summary["claims"]["time: best single-setting arpack (curvlinops) / ours, same stop at one tol"] = \
                timed["seconds"] / alike["seconds"]
    out["sharpness_along_training"] = {
        "target_rel_err": TARGET, "every": 50, "states_per_run": n_states, "data": str(data_dir),
        "summary": summary, "trajectories": trajectories,
    }

    log("lanczos step vs one product")
    model, batch, loss_fn, _ = trajectory(specs["sp-xent"], data_dir, every=50, n_states=1)
    op = hessian_operator(model, loss_fn, batch)
    out["lanczos_step"] = bench_lanczos_step(op, steps=(10, 20, 40), repeats=3 if quick else 5)
    log("hvp cost")
    out["hvp_cost"] = bench_hvp_cost(model, loss_fn, *batch, repeats=5 if quick else 11)
    del op

    log("ntk matrix-free vs explicit")
    out["ntk_matrix_free_vs_explicit"] = bench_ntk(
        width_small=[784, 64, 10] if quick else [784, 128, 128, 10],
        n_small=64 if quick else 128,
        width_large=[784, 1024, 256, 10],
        n_large=128 if quick else 512,
        threads=args.threads,
    )

    log("per-module NTK")
    widths = [784, 128 if quick else 256, 128 if quick else 256, 10]
    mlp_model = mlp(widths)
    mlp_modules = {f"layer{i}": [f"{2 * i}.weight", f"{2 * i}.bias"] for i in range(len(widths) - 1)}
    n_probe = 32 if quick else 64
    xp, _ = digits(n_probe, seed=3)
    torch.manual_seed(0)
    tf = TinyTransformer(d=32 if quick else 64, layers=1 if quick else 2)
    tokens = torch.randint(0, 64, (n_probe, 16), generator=torch.Generator().manual_seed(4))
    out["module_ntk"] = {
        "scalarisation": "class_trace, 4 projections orthogonal to ones",
        "mlp_layers": bench_module_ntk(mlp_model, xp, mlp_modules, repeats=5 if quick else 7),
        "transformer_heads": bench_module_ntk(tf, tokens, transformer_modules(tf), repeats=5 if quick else 7),
    }
    out["load_average_at_end"] = os.getloadavg()
    out["total_s"] = time.perf_counter() - t_start
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
