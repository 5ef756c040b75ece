"""The pipeline's sharpness workload, and the peers that solve it, for bench_spectra.py.

The workload: the scaling study's measured runs (MLP width 512, depth 2, Fashion-MNIST,
its fixed batch of 256) trained by traindyn's own loop; the weights at every
``every``-th step are the states. At each state every method must reach a relative
error of ``TARGET`` on the top Hessian eigenvalue against a float64 reference.

Peers, each at its best setting on the whole trajectory:
- ``ours``: ``traindyn.spectra.lanczos`` with its own stop at ``tol=TARGET``, cold or warm,
  verified as the library does by default (a second run on the deflated operator; its
  products count).
  Also ours with ARPACK's rule (``tol=None``: the residual test alone, ``vector_tol`` on
  ARPACK's ladder, warm from the top vector) tuned exactly as ARPACK is: per trajectory
  the loosest tol that meets the target at every state, and one tol for the whole
  workload (``ours_residual_settings``). Tuned against the reference, like ARPACK's rows:
  what the solver needs when the stop is tuned with hindsight, beside our own stop, which
  is not.
- ``arpack``: SciPy ``eigsh(which="LA")`` on a curvlinops ``HessianLinearOperator``
  (and on traindyn's operator, to separate solver from product), ncv swept, each ncv's
  loosest ``tol`` (of a ladder) that meets the target at every state: tuned per
  trajectory against the reference, an oracle. ``run_arpack_settings`` instead finds
  the one (ncv, tol) that serves the whole workload, as a user tuning once would.
- ``pyhessian``: PyHessian 0.1's power iteration, stopped by an oracle at the first
  estimate within the target (a lower bound on what its own rule needs).
- ``eigenthings``: hessian-eigenthings' Lanczos (fixed step count, no early stop), with
  the smallest step count per state that meets the target (an oracle again).
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from traindyn.spectra import (
    LanczosWorkspace,
    LinearOperator,
    adam_preconditioner,
    gauss_newton_operator,
    hessian_operator,
    lanczos,
    ntk_operator,
)
from traindyn.spectra.callback import start_vectors
from traindyn.train import Callback, RunData, build, make_loss, train

TARGET = 1e-3
ARPACK_TOLS = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5)
# One ARPACK setting for the whole workload (what tuning once buys a user): warm starts,
# every (ncv, tol) pair of this grid on every trajectory; the summary keeps the setting
# with the fewest products that meets the target at every state of every trajectory.
SETTING_NCVS = (4, 5, 6, 8)
SETTING_TOLS = (3e-2, 1e-2, 3e-3)
# The start SpectraCallback uses (traindyn.spectra.callback.start_vectors): the previous top
# and guard Ritz vectors, summed. The ratios' "ours" is this one.
CALLBACK_WARM = "top2"
GUARD_SWEEP = (20.0, 30.0, float("inf"))  # looser than the library's 10x (see run_ours_guard)


class _Capture(Callback):
    """Keeps a copy of the weights at every ``every``-th step (step 0 included), and Adam's
    denominator P (``adam_preconditioner``) where the run's Adam/AdamW has state: what the
    ``preconditioned`` measure saw at that step (``preconditioners``)."""

    def __init__(self, every: int) -> None:
        self.every, self.states, self.preconditioners = every, {}, {}

    def _keep(self, state) -> None:
        if state.step % self.every == 0:
            self.states[state.step] = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
            opt = state.optimizer
            if isinstance(opt, torch.optim.Adam | torch.optim.AdamW) and opt.state:
                self.preconditioners[state.step] = adam_preconditioner(state.model, opt).detach().clone()

    def on_train_start(self, state) -> None:
        self._keep(state)

    def on_step_end(self, state, loss: float) -> None:
        self._keep(state)


def prepare_fashion(out_dir: Path) -> Path:
    """Fashion-MNIST prepared by traindyn's data stage (config.yaml's data section)."""
    from traindyn.config import load_config
    from traindyn.data import prepare_dataset

    cfg = load_config([Path(__file__).resolve().parents[1] / "config.yaml"])
    target = out_dir / "fashion-mnist"
    if not (target / "manifest.json").is_file():
        prepare_dataset("fashion-mnist", cfg.data, target)
    return target


def workload_specs(width: int = 512) -> dict[str, object]:
    """The scaling study's sharpness runs at ``width`` (SP and muP, cross-entropy and MSE)."""
    from traindyn.config import load_config
    from traindyn.scaling.grid import scaling_runs

    cfg = load_config([Path(__file__).resolve().parents[1] / "config.yaml"]).raw["scaling"]
    specs = {}
    for spec in scaling_runs(cfg).values():
        if "spectra" in spec.extra and spec.model["width"] == width and spec.seed == 0 and spec.depth_alpha is None:
            specs[f"{spec.param}-{spec.loss}"] = spec
    return {k: specs[k] for k in sorted(specs) if k.split("-")[0] in ("sp", "mup")}


def trajectory(spec, data_dir: Path, every: int, n_states: int):
    """Train ``spec`` for ``every * (n_states - 1)`` steps; return model, batch, loss, states."""
    spec = dataclasses.replace(spec, steps=every * (n_states - 1), checkpoint_every=0,
                               eval_every=every * (n_states - 1))
    capture = _Capture(every)
    with tempfile.TemporaryDirectory() as run_dir:
        train(spec, data_dir, run_dir, callbacks=[capture], device=torch.device("cpu"), progress=False)
    data = RunData(spec, Path(data_dir), torch.device("cpu"))
    model, _ = build(spec, data.model_dims(), torch.device("cpu"))
    return model, data.fixed_batch, make_loss(spec.loss), capture.states


# ----------------------------------------------------------------------------- reference, ours


def float64_operator(model: nn.Module, loss_fn, batch, measure: str = "hessian", n_ntk: int = 64,
                     ntk_kernel: str = "class_sum", preconditioner: torch.Tensor | None = None):
    """The float64 operator of ``measure`` (``hessian``, ``gn``, ``ntk``, ``preconditioned``) on
    a float64 deep copy of the model (integer inputs, e.g. tokens, stay as they are).

    ``preconditioned`` is P^-1/2 H P^-1/2 as ``preconditioned_hessian_operator`` forms it, with
    ``preconditioner`` the run's Adam denominator P at that step (``_Capture``; float32 values,
    taken to float64).
    """
    m64 = _copy(model).double()
    x, y = batch
    x = x.double() if x.is_floating_point() else x
    if measure in ("hessian", "preconditioned"):
        hessian = hessian_operator(m64, loss_fn, (x, y))
        if measure == "hessian":
            return hessian
        if preconditioner is None:
            raise ValueError("measure 'preconditioned' needs the run's Adam preconditioner")
        d = preconditioner.to(device=hessian.device, dtype=torch.float64).rsqrt()
        return LinearOperator(matvec=lambda v: d * hessian.matvec(d * v.to(torch.float64)), dim=hessian.dim,
                              dtype=torch.float64, device=hessian.device)
    if measure == "gn":
        return gauss_newton_operator(m64, loss_fn, (x, y))
    return ntk_operator(m64, x[:n_ntk], kernel=ntk_kernel)


def reference(model: nn.Module, loss_fn, batch, measure: str = "hessian", **kwargs) -> tuple[float, float]:
    """Top two eigenvalues of ``measure``'s float64 operator (``float64_operator``; ``kwargs``:
    ``n_ntk``, ``ntk_kernel``, ``preconditioner``), to 1e-12 and verified."""
    res = lanczos(float64_operator(model, loss_fn, batch, measure, **kwargs), k=2, tol=1e-12, max_iter=250)
    return float(res.eigenvalues[0]), float(res.eigenvalues[1])


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def rel_err(value: float, ref: float) -> float:
    return abs(value - ref) / abs(ref)


def oracle_products(op, ref: float, max_iter: int = 200) -> int | None:
    """Products until our top Ritz value is first within the target (no stopping rule)."""
    hit: list[int] = []

    def check(m, theta):
        if not hit and rel_err(float(theta[0]), ref) <= TARGET:
            hit.append(m)
            raise StopIteration

    try:
        lanczos(op, k=1, tol=0.0, max_iter=max_iter, callback=check)
    except StopIteration:
        return hit[0]
    return None


def warm_start(previous, how: str):
    """Start vector from the previous state's result: ``cold``, ``top`` or ``top2``."""
    if previous is None or how == "cold":
        return None
    if how == "top2":  # SpectraCallback's start: the top and guard vectors, summed by lanczos
        return start_vectors(previous)
    return previous.eigenvectors[0]


# ----------------------------------------------------------------------------- peers


class _Counted:
    """A matvec wrapper that counts products."""

    def __init__(self, fn):
        self.fn, self.n = fn, 0

    def __call__(self, v):
        self.n += 1
        return self.fn(v)


class HalfMSE(nn.Module):
    """0.5 * ||f - onehot(y)||^2 summed over classes, mean over the batch (traindyn's mse)."""

    reduction = "mean"

    def forward(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (f - F.one_hot(y, f.shape[-1]).to(f.dtype)).pow(2).sum(-1).mean()


def curvlinops_operator(model, loss: str, batch):
    """A SciPy LinearOperator of the Hessian by curvlinops (one batch, no determinism check)."""
    from curvlinops import HessianLinearOperator

    loss_func = nn.CrossEntropyLoss() if loss == "xent" else HalfMSE()
    params = [p for p in model.parameters() if p.requires_grad]
    op = HessianLinearOperator(model, loss_func, params, [batch], check_deterministic=False)
    return op.to_scipy(dtype=np.float32)


def traindyn_scipy_operator(model, loss_fn, batch):
    """traindyn's retained-graph Hessian operator as a SciPy LinearOperator (float32)."""
    from scipy.sparse.linalg import LinearOperator

    op = hessian_operator(model, loss_fn, batch)

    def mv(v):
        return op(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32).reshape(-1))).numpy()

    return LinearOperator((op.dim, op.dim), matvec=mv, dtype=np.float32)


def arpack(scipy_op, ncv: int, tol: float, v0=None, seed: int = 0):
    """eigsh(k=1, which='LA'); returns (eigenvalue, eigenvector, products)."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    counted = _Counted(scipy_op.matvec)
    op = LinearOperator(scipy_op.shape, matvec=counted, dtype=scipy_op.dtype)
    if v0 is None:
        v0 = np.random.default_rng(seed).standard_normal(scipy_op.shape[0]).astype(np.float32)
    vals, vecs = eigsh(op, k=1, which="LA", ncv=ncv, tol=tol, v0=v0, maxiter=1000)
    return float(vals[0]), vecs[:, 0], counted.n


def pyhessian_to_target(model, loss_fn, batch, ref: float, max_hvp: int, seed: int = 0):
    """PyHessian 0.1's eigenvalues(top_n=1), stopped at the first estimate within the target.

    Returns (products, seconds) or (None, seconds) if ``max_hvp`` products did not reach it.
    """
    from pyhessian import hessian as PyHessian

    module = sys.modules["pyhessian.hessian"]
    original = module.hessian_vector_product
    count = [0]

    class _Done(Exception):
        pass

    def counting(grads_h, params, v):
        hv = original(grads_h, params, v)
        count[0] += 1
        estimate = float(sum(torch.sum(a * b) for a, b in zip(hv, v, strict=True)))
        if rel_err(estimate, ref) <= TARGET:
            raise _Done
        return hv

    torch.manual_seed(seed)
    module.hessian_vector_product = counting
    t0 = time.perf_counter()
    try:
        PyHessian(model, loss_fn, data=batch, cuda=False).eigenvalues(maxIter=max_hvp, tol=0.0)
        hit = None
    except _Done:
        hit = count[0]
    finally:
        module.hessian_vector_product = original
    elapsed = time.perf_counter() - t0
    for p in model.parameters():  # PyHessian's backward(create_graph=True) left graphs in .grad
        p.grad = None
    return hit, elapsed


def eigenthings_to_target(model, loss_fn, batch, ref: float, max_iter: int = 50, seed: int = 0):
    """Smallest step count of hessian-eigenthings' lanczos(k=1, which='LA') within the target.

    Its lanczos runs a fixed number of steps from a seeded start; the first j steps of a
    longer run are the same, so one run of ``max_iter`` steps gives every j's answer.
    Returns (steps, seconds of one lanczos call with that many steps) or (None, None).
    """
    import hessian_eigenthings as he

    def make():
        return he.HessianOperator(model, [batch], he.supervised_loss(loss_fn))

    gen = torch.Generator().manual_seed(seed)
    op = make()
    v0 = torch.randn(op.size, dtype=op.dtype, generator=gen)
    td = he.lanczos_tridiagonal(op, v0, max_iter, reorthogonalize=True)
    a, b = td.alphas.double(), td.betas.double()
    steps = None
    for j in range(1, td.iterations + 1):
        t = torch.diag(a[:j]) + torch.diag(b[: j - 1], 1) + torch.diag(b[: j - 1], -1)
        if rel_err(float(torch.linalg.eigvalsh(t)[-1]), ref) <= TARGET:
            steps = j
            break
    if steps is None:
        return None, None
    t0 = time.perf_counter()
    res = he.lanczos(make(), k=1, max_iter=max(steps, 1), which="LA", seed=seed, reorthogonalize=True)
    elapsed = time.perf_counter() - t0
    if rel_err(float(res.eigenvalues[0]), ref) > TARGET:  # its own start differs: report honestly
        return f"own start missed the target at {steps} steps", elapsed
    return steps, elapsed


# ----------------------------------------------------------------------------- the comparison


def _load(model, weights):
    model.load_state_dict(weights)
    return model


def _timed(op: LinearOperator) -> tuple[LinearOperator, list[float]]:
    """The operator, and a list that its products append their wall times to."""
    seconds: list[float] = []

    def matvec(v: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = op(v)
        seconds.append(time.perf_counter() - t0)
        return out

    return LinearOperator(matvec=matvec, dim=op.dim, dtype=op.dtype, device=op.device), seconds


def run_ours(model, loss_fn, batch, states, refs, how: str, max_iter: int = 100, **stop) -> dict:
    """Our Lanczos along the trajectory, warm-started as ``how`` says; its own stop at
    ``tol=TARGET`` unless ``stop`` says otherwise (e.g. ``tol=None, vector_tol=...``)."""
    previous, rows = None, []
    stop = {"tol": TARGET, **stop}
    workspace = LanczosWorkspace()  # kept along the run, as SpectraCallback keeps one
    for (step, weights), ref in zip(states.items(), refs, strict=True):
        _load(model, weights)
        t0 = time.perf_counter()
        op = hessian_operator(model, loss_fn, batch)
        built = time.perf_counter()
        timed, product_times = _timed(op)
        res = lanczos(timed, k=1, max_iter=max_iter, v0=warm_start(previous, how),
                      generator=torch.Generator().manual_seed(step), workspace=workspace, **stop)
        elapsed = time.perf_counter() - t0
        previous = res
        rows.append({"step": step, "products": res.n_matvec, "seconds": elapsed,
                     "rel_err": rel_err(float(res.eigenvalues[0]), ref[0]), "reorth": res.n_reorth,
                     "lanczos_seconds": elapsed - (built - t0), "product_seconds": sum(product_times)})
    lanczos_s = sum(r["lanczos_seconds"] for r in rows)
    product_s = sum(r["product_seconds"] for r in rows)
    return {**_summary(rows),
            # Steps that needed the pass over the whole basis (partial reorthogonalization).
            "reorth_steps": sum(r["reorth"] for r in rows),
            # The Lanczos step on the workload itself: every call's time (operator built,
            # start vector to Ritz vector) over the time spent inside its products.
            "lanczos_seconds": lanczos_s, "product_seconds": product_s,
            "step_over_product": lanczos_s / product_s if product_s > 0 else None}


def run_ours_guard(model, loss_fn, batch, states, refs, factor: float) -> dict:
    """``run_ours`` (top-vector warm start, the single run's stop: ``verify=False``) with the
    guard pair's factor set to ``factor``.

    What a looser guard would save along the run, and what it costs in accuracy, without the
    verification (which finds what a loose guard misses, at the price of its own run); the
    library keeps ``lanczos.GUARD_FACTOR`` (the loosest that passes the close-pair tests).
    """
    module = sys.modules[lanczos.__module__]
    kept = module.GUARD_FACTOR
    module.GUARD_FACTOR = factor
    try:
        return run_ours(model, loss_fn, batch, states, refs, "top", verify=False)
    finally:
        module.GUARD_FACTOR = kept


def run_ours_residual_settings(model, loss_fn, batch, states, refs) -> dict:
    """Ours with ARPACK's stop (residual test alone, top-vector warm start) at every tol of
    ARPACK's ladder: ``{"tol=T": summary}``."""
    return {f"tol={tau:g}": run_ours(model, loss_fn, batch, states, refs, "top", tol=None, vector_tol=tau)
            for tau in ARPACK_TOLS}


def loosest_working(settings: dict) -> dict:
    """The loosest tol of a ladder (``{"tol=T": summary}``, loosest first) that meets the
    target at every state, as ``run_arpack`` picks ARPACK's: tuned against the reference."""
    for name, summary in settings.items():
        if summary["all_within_target"]:
            return {"tol": float(name.split("=")[1]), **summary}
    return {"tol": None, "all_within_target": False}


def _summary(rows: list[dict]) -> dict:
    return {
        "products": sum(r["products"] for r in rows),
        "seconds": sum(r["seconds"] for r in rows),
        "max_rel_err": max(r["rel_err"] for r in rows),
        "all_within_target": all(r["rel_err"] <= TARGET for r in rows),
        "per_state_products": [r["products"] for r in rows],
    }


def _arpack_along(model, loss_fn, loss: str, batch, states, refs, ncv: int, tol: float, backend: str,
                  warm: bool) -> list[dict]:
    """eigsh at one (ncv, tol) state by state, warm-started from the last eigenvector if
    ``warm``; stops at the first state that misses the target."""
    rows, v0 = [], None
    for (step, weights), ref in zip(states.items(), refs, strict=True):
        _load(model, weights)
        t0 = time.perf_counter()
        sop = curvlinops_operator(model, loss, batch) if backend == "curvlinops" else \
            traindyn_scipy_operator(model, loss_fn, batch)
        value, vec, n = arpack(sop, ncv=ncv, tol=tol, v0=v0 if warm else None, seed=step)
        rows.append({"step": step, "products": n, "seconds": time.perf_counter() - t0,
                     "rel_err": rel_err(value, ref[0])})
        v0 = vec
        if rows[-1]["rel_err"] > TARGET:
            break
    return rows


def run_arpack(model, loss_fn, loss: str, batch, states, refs, ncv: int, backend: str, warm: bool) -> dict:
    """eigsh at each ladder tol until one meets the target at every state (that one is kept)."""
    tried = []
    for tol in ARPACK_TOLS:
        rows = _arpack_along(model, loss_fn, loss, batch, states, refs, ncv, tol, backend, warm)
        tried.append(tol)
        if len(rows) == len(states) and all(r["rel_err"] <= TARGET for r in rows):
            return {"tol": tol, "tols_tried": tried, **_summary(rows)}
    return {"tol": None, "tols_tried": tried, "all_within_target": False}


def run_arpack_settings(model, loss_fn, loss: str, batch, states, refs, backend: str = "traindyn-operator",
                        settings=None) -> dict:
    """Warm-started eigsh at every (ncv, tol) of the settings grid along the trajectory.

    Returns ``{"ncv=N, tol=T": summary}``; a setting that misses the target at a state
    stops there (``all_within_target`` False, products of the states run so far).
    """
    if settings is None:
        settings = [(ncv, tol) for ncv in SETTING_NCVS for tol in SETTING_TOLS]
    out = {}
    for ncv, tol in settings:
        rows = _arpack_along(model, loss_fn, loss, batch, states, refs, ncv, tol, backend, warm=True)
        summary = _summary(rows)
        summary["all_within_target"] &= len(rows) == len(states)
        out[f"ncv={ncv}, tol={tol:g}"] = summary
    return out


def run_pyhessian(model, loss_fn, batch, states, refs, max_hvp: int) -> dict:
    rows = []
    for (step, weights), ref in zip(states.items(), refs, strict=True):
        _load(model, weights)
        n, seconds = pyhessian_to_target(model, loss_fn, batch, ref[0], max_hvp, seed=step)
        if n is None:
            return {"all_within_target": False, "note": f"> {max_hvp} products at step {step}"}
        rows.append({"step": step, "products": n, "seconds": seconds, "rel_err": TARGET})
    model.eval()
    return {**_summary(rows), "note": "oracle stop at the first estimate within the target"}


def run_eigenthings(model, loss_fn, batch, states, refs) -> dict:
    rows = []
    for (step, weights), ref in zip(states.items(), refs, strict=True):
        _load(model, weights)
        steps, seconds = eigenthings_to_target(model, loss_fn, batch, ref[0], seed=step)
        if not isinstance(steps, int):
            return {"all_within_target": False, "note": f"step {step}: {steps}"}
        rows.append({"step": step, "products": steps, "seconds": seconds, "rel_err": TARGET})
    return {**_summary(rows), "note": "oracle: fewest fixed Lanczos steps within the target, per state",
            "fixed_max_iter_for_whole_trajectory": max(r["products"] for r in rows) * len(rows)}


def compare_on_trajectory(spec, data_dir: Path, every: int, n_states: int, ncvs, max_hvp: int,
                          log=print) -> dict:
    """Every method on one trajectory; products, seconds and the ratios to ours."""
    model, batch, loss_fn, states = trajectory(spec, data_dir, every, n_states)
    refs = [reference(_load(model, w), loss_fn, batch) for w in states.values()]
    out = {"run": spec.run, "loss": spec.loss, "param": spec.param, "lr": spec.lr,
           "n_params": sum(p.numel() for p in model.parameters()), "batch": batch[0].shape[0],
           "steps": list(states), "reference_top2": [[round(a, 6), round(b, 6)] for a, b in refs],
           "top2_gap_rel": [round((a - b) / a, 4) for a, b in refs]}
    methods: dict = {}
    for how in ("cold", "top", "top2"):
        methods[f"ours (warm={how})"] = run_ours(model, loss_fn, batch, states, refs, how)
    for factor in GUARD_SWEEP:
        name = "no guard" if factor == float("inf") else f"guard {factor:g}x"
        methods[f"ours (warm=top, {name})"] = run_ours_guard(model, loss_fn, batch, states, refs, factor)
    out["ours_residual_settings"] = run_ours_residual_settings(model, loss_fn, batch, states, refs)
    methods["ours (ARPACK's residual stop, tol tuned per run)"] = loosest_working(out["ours_residual_settings"])
    log(f"{spec.run}: ours done")
    for backend in ("curvlinops", "traindyn-operator"):
        for ncv in ncvs:
            for warm in (False, True):
                # ARPACK on our operator separates solver from product: at the usual best ncv.
                # With ncv = 20 the first Krylov space already holds 20 products: no warm run.
                if (backend != "curvlinops" and ncv != 5) or (warm and ncv >= 20):
                    continue
                key = f"arpack eigsh ({backend}, ncv={ncv}, {'warm' if warm else 'cold'})"
                methods[key] = run_arpack(model, loss_fn, spec.loss, batch, states, refs, ncv, backend, warm)
    out["arpack_settings"] = run_arpack_settings(model, loss_fn, spec.loss, batch, states, refs)
    log(f"{spec.run}: arpack done")
    methods["pyhessian 0.1 power iteration"] = run_pyhessian(model, loss_fn, batch, states, refs, max_hvp)
    methods["hessian-eigenthings lanczos"] = run_eigenthings(model, loss_fn, batch, states, refs)
    log(f"{spec.run}: pyhessian, eigenthings done")
    out["methods"] = methods
    out["ratios_vs_ours"] = _ratios(methods)
    return out


def _ratios(methods: dict) -> dict:
    best = f"ours (warm={CALLBACK_WARM})"  # the spectra callback's warm start, not the best of ours per run
    ours = {best: methods[best]}
    arpacks = {k: v for k, v in methods.items() if k.startswith("arpack") and v.get("all_within_target")}
    ratios = {"ours": best}
    for name, group in (("arpack_curvlinops", {k: v for k, v in arpacks.items() if "curvlinops" in k}),
                        ("arpack_traindyn_operator", {k: v for k, v in arpacks.items() if "traindyn" in k})):
        if group:
            by_products = min(group, key=lambda k: (group[k]["products"], group[k]["seconds"]))
            by_time = min(group, key=lambda k: group[k]["seconds"])
            ratios[f"best_{name}_by_products"] = by_products
            ratios[f"{name}_products_over_ours"] = group[by_products]["products"] / ours[best]["products"]
            ratios[f"best_{name}_by_time"] = by_time
            ratios[f"{name}_time_over_ours"] = group[by_time]["seconds"] / ours[best]["seconds"]
    tuned = methods.get("ours (ARPACK's residual stop, tol tuned per run)", {})
    if tuned.get("all_within_target") and "best_arpack_curvlinops_by_products" in ratios:
        ratios["arpack_curvlinops_products_over_ours_tuned_alike"] = \
            methods[ratios["best_arpack_curvlinops_by_products"]]["products"] / tuned["products"]
    for key in ("pyhessian 0.1 power iteration", "hessian-eigenthings lanczos"):
        if methods.get(key, {}).get("all_within_target"):
            ratios[f"{key}: products_over_ours"] = methods[key]["products"] / ours[best]["products"]
            ratios[f"{key}: time_over_ours"] = methods[key]["seconds"] / ours[best]["seconds"]
    return ratios
