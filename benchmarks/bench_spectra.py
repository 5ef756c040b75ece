"""Benchmark of traindyn.spectra against the obvious alternatives; prints one JSON object.

Sections (each comparison on the same model and batch in one run):
- hvp_cost: one Hessian-vector product vs one gradient, for the library's retained
  double backward and the torch.func alternatives; also J v by double vjp vs forward AD.
- lanczos_vs_power: HVPs and time to reach rel. error 1e-3 on the top Hessian eigenvalue,
  our Lanczos vs PyHessian's power iteration (the pyhessian package if installed, else a
  faithful reimplementation, labelled as such).
- ntk_matrix_free_vs_explicit: NTK top eigenvalue, matrix-free Lanczos vs the explicit
  Jacobian (torch.func.jacrev), time and peak RSS in a subprocess each; and at >= 1M
  parameters with n = 512 the matrix-free path only.
- module_ntk: every module's lambda_max (one pass, split by module) vs one full-NTK
  lambda_max on the same probes, for an MLP's layers and a tiny transformer's heads.

Usage: python benchmarks/bench_spectra.py [--quick] [--threads 1]
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
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vjp

from traindyn.spectra import (
    Jacobian,
    hessian_operator,
    lanczos,
    module_ntk,
    ntk_kernel,
    ntk_operator,
)

TARGET_REL_ERR = 1e-3


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[bench_spectra {time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def interleaved_times(fns: dict, repeats: int) -> dict:
    """Median time of each function, alternating their order each round (fair under load)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        for k in keys if r % 2 == 0 else keys[::-1]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


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


LOSSES = {"cross_entropy": F.cross_entropy, "mse": half_mse}


def train_briefly(model: nn.Module, steps: int, loss_fn=F.cross_entropy, lr: float = 0.05, batch: int = 64) -> float:
    x, y = digits(1797)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(1)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,), generator=gen)
        opt.zero_grad()
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    return loss.item()


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


# ----------------------------------------------------------------------------- Lanczos vs power


class _Reached(Exception):
    """Raised from inside a solver once its estimate is within the target error."""


def within(estimate: float, ref: float) -> bool:
    return abs(estimate - ref) <= TARGET_REL_ERR * abs(ref)


def lanczos_hvps_to_target(op, lam: float, max_iter: int) -> int | None:
    """Products until the top Ritz value is within the target error of ``lam``."""
    reached: list[int] = []

    def check(m: int, theta: torch.Tensor) -> None:
        if within(float(theta[0]), lam):
            reached.append(m)
            raise _Reached

    try:
        lanczos(op, k=1, tol=0.0, max_iter=max_iter, callback=check)
    except _Reached:
        return reached[0]
    return None


def pyhessian_power_counting(model, loss_fn, x, y, max_hvp: int, tol: float, seed: int, stop_at=None):
    """PyHessian's eigenvalues(top_n=1): the package if installed, else a faithful copy.

    Returns (label, estimates, timestamps) with one estimate <Hv, v> per HVP, exactly the
    value PyHessian compares between iterations. With ``stop_at`` (a reference eigenvalue)
    it stops as soon as the estimate is within the target error of it.
    """
    torch.manual_seed(seed)
    try:
        import pyhessian  # noqa: F401
        from pyhessian import hessian as PyHessian

        module = sys.modules["pyhessian.hessian"]
        original = module.hessian_vector_product
        estimates, stamps = [], []

        def counting(gradsH, params, v):
            hv = original(gradsH, params, v)
            estimates.append(float(sum(torch.sum(a * b) for a, b in zip(hv, v, strict=True))))
            stamps.append(time.perf_counter())
            if stop_at is not None and within(estimates[-1], stop_at):
                raise _Reached
            return hv

        module.hessian_vector_product = counting
        try:
            t0 = time.perf_counter()
            PyHessian(model, loss_fn, data=(x, y), cuda=False).eigenvalues(maxIter=max_hvp, tol=tol)
        except _Reached:
            pass
        finally:
            module.hessian_vector_product = original
        return "pyhessian package", estimates, [s - t0 for s in stamps]
    except ImportError:
        return ("faithful reimplementation of PyHessian 0.1 hessian.eigenvalues (pyhessian not installed)",
                *power_iteration_pyhessian(model, loss_fn, x, y, max_hvp, tol, stop_at))


def power_iteration_pyhessian(model, loss_fn, x, y, max_hvp: int, tol: float, stop_at=None):
    """PyHessian 0.1's power iteration: retained gradient graph, list-of-tensors ops."""
    t0 = time.perf_counter()
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(model(x), y)
    grads_h = torch.autograd.grad(loss, params, create_graph=True)

    def normalization(v):
        s = float(sum(torch.sum(a * a) for a in v)) ** 0.5
        return [a / (s + 1e-6) for a in v]

    v = normalization([torch.randn(p.size()) for p in params])
    eigenvalue, estimates, stamps = None, [], []
    for _ in range(max_hvp):
        hv = torch.autograd.grad(grads_h, params, grad_outputs=v, only_inputs=True, retain_graph=True)
        tmp = float(sum(torch.sum(a * b) for a, b in zip(hv, v, strict=True)))
        estimates.append(tmp)
        stamps.append(time.perf_counter() - t0)
        if stop_at is not None and within(tmp, stop_at):
            break
        v = normalization(hv)
        if eigenvalue is not None and abs(eigenvalue - tmp) / (abs(eigenvalue) + 1e-6) < tol:
            break
        eigenvalue = tmp
    return estimates, stamps


def first_within(estimates: list[float], ref: float, rel: float) -> int | None:
    for i, e in enumerate(estimates):
        if abs(e - ref) <= rel * abs(ref):
            return i + 1
    return None


def bench_lanczos_vs_power(model, loss_fn, x, y, max_hvp: int, repeats: int) -> dict:
    op = hessian_operator(model, loss_fn, (x, y))
    ref = lanczos(op, k=1, tol=1e-8, max_iter=300)
    lam = float(ref.eigenvalues[0])
    # Counting pass: products until each estimate is first within the target error.
    m_lanczos = lanczos_hvps_to_target(op, lam, max_iter=300)
    label, power_est, _ = pyhessian_power_counting(model, loss_fn, x, y, max_hvp, tol=0.0, seed=0, stop_at=lam)
    m_power = first_within(power_est, lam, TARGET_REL_ERR)
    # Timing pass at equal accuracy: exactly the products each needs, operator set-up included.
    def lanczos_to_target():
        lanczos(hessian_operator(model, loss_fn, (x, y)), k=1, tol=0.0, max_iter=m_lanczos)

    fns = {"lanczos": lanczos_to_target}
    if m_power is not None:
        # The counting implementation again, stopped at exactly m_power products (set-up included).
        fns["power"] = lambda: pyhessian_power_counting(model, loss_fn, x, y, m_power, tol=0.0, seed=0)
    times = interleaved_times(fns, repeats)
    t_lanczos, t_power = times["lanczos"], times.get("power")
    # Each method's own stopping rule at tol 1e-3.
    own_l = lanczos(op, k=1, tol=TARGET_REL_ERR, max_iter=300)
    _, own_p, _ = pyhessian_power_counting(model, loss_fn, x, y, max_hvp, tol=TARGET_REL_ERR, seed=0)
    model.train()
    return {
        "reference_lambda_max": lam,
        "reference_residual_rel": float(ref.residuals[0] / abs(lam)),
        "target_rel_err": TARGET_REL_ERR,
        "power_iteration_impl": label,
        "lanczos_hvps_to_target": m_lanczos,
        "power_hvps_to_target": m_power if m_power is not None else f"> {max_hvp}",
        "hvp_ratio_power_over_lanczos": (m_power / m_lanczos) if m_power else f"> {max_hvp / m_lanczos:.1f}",
        "lanczos_time_to_target_s": t_lanczos,
        "power_time_to_target_s": t_power,
        "time_ratio_power_over_lanczos": (t_power / t_lanczos) if t_power else None,
        "own_stopping_rule_tol_1e-3": {
            "lanczos": {"hvps": own_l.n_matvec, "rel_err": abs(float(own_l.eigenvalues[0]) - lam) / abs(lam)},
            "power (PyHessian rule)": {"hvps": len(own_p), "rel_err": abs(own_p[-1] - lam) / abs(lam)},
        },
    }


def hvp_counts(model, loss_fn, x, y, max_hvp: int) -> dict:
    """HVPs each method needs to reach the target error (no timing): for the settings sweep."""
    op = hessian_operator(model, loss_fn, (x, y))
    ref = lanczos(op, k=3, tol=1e-8, max_iter=300)
    lam = float(ref.eigenvalues[0])
    m_l = lanczos_hvps_to_target(op, lam, max_iter=300)
    _, power_est, _ = pyhessian_power_counting(model, loss_fn, x, y, max_hvp, tol=0.0, seed=0, stop_at=lam)
    model.train()
    m_p = first_within(power_est, lam, TARGET_REL_ERR)
    return {
        "top3": [round(float(e), 4) for e in ref.eigenvalues],
        "lambda2_over_lambda1": float(ref.eigenvalues[1] / ref.eigenvalues[0]),
        "lanczos_hvps": m_l,
        "power_hvps": m_p if m_p is not None else f"> {max_hvp}",
        "ratio": (m_p / m_l) if m_p else f"> {max_hvp / m_l:.1f}",
    }


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
    parser.add_argument("--quick", action="store_true", help="smaller models and batches (about a minute)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
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

    hidden = 128 if quick else 256
    widths = [784, hidden, hidden, 10]
    steps = 100 if quick else 300
    x, y = digits(128 if quick else 256, seed=2)
    max_hvp = 300 if quick else 1000
    # Headline setting: MSE (the scaling study's edge-of-stability loss) after brief training.
    model = mlp(widths)
    final_loss = train_briefly(model, steps=steps, loss_fn=half_mse)
    out["hessian_setup"] = {
        "model": f"MLP {widths} tanh", "n_params": n_params(model), "batch": x.shape[0],
        "data": "sklearn digits upsampled to 28x28, standardised", "loss": "mse (0.5 sum over classes, mean over batch)",
        "trained_steps": steps, "train_loss": final_loss,
    }
    log("hvp cost")
    out["hvp_cost"] = bench_hvp_cost(model, half_mse, x, y, repeats=11 if quick else 21)
    log("lanczos vs power iteration")
    out["lanczos_vs_power"] = bench_lanczos_vs_power(model, half_mse, x, y, max_hvp=max_hvp,
                                                     repeats=3 if quick else 5)
    log("lanczos vs power iteration: settings sweep (counts only)")
    sweep = {}
    for loss_name, loss_fn in LOSSES.items():
        for trained in (0, steps):
            m = mlp(widths)
            if trained:
                train_briefly(m, steps=trained, loss_fn=loss_fn)
            sweep[f"{loss_name}, {'trained ' + str(trained) + ' steps' if trained else 'init'}"] = hvp_counts(
                m, loss_fn, x, y, max_hvp
            )
    out["lanczos_vs_power_settings_sweep"] = sweep

    log("ntk matrix-free vs explicit")
    out["ntk_matrix_free_vs_explicit"] = bench_ntk(
        width_small=[784, 64, 10] if quick else [784, 128, 128, 10],
        n_small=64 if quick else 128,
        width_large=[784, 1024, 256, 10],
        n_large=128 if quick else 512,
        threads=args.threads,
    )

    log("per-module NTK")
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
