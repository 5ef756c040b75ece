"""Lanczos with partial reorthogonalization for the algebraically largest eigenvalues."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from traindyn.spectra.flat import LinearOperator

__all__ = ["LanczosResult", "LanczosWorkspace", "eigenvalue_errors", "lanczos"]

# The guard pair (the (k+1)-th) must reach this many times the requested accuracy.
# 10 is the loosest that passes the close-pair tests in tests/unit/test_spectra_lanczos.py
# (a start nearly orthogonal to the top vector; a cold start at tol 1e-2). Looser guards
# save products along bench_spectra.py's runs (its guard sweep; top-vector warm starts,
# 28 states, tol 1e-3: 283 products at 10x, 255 at 20x, 239 at 30x, 165 with none) but 15x
# already returns the second of two eigenvalues 3.6% apart, and with no guard the error
# reached 7.5e-3.
GUARD_FACTOR = 10.0

# The local correction against q_j is skipped while the overlap it would remove is at most
# min(psi, _LOCAL_CAP * unit) (see ``lanczos``): 32 * 8 eps = 3.1e-5 in float32, under a
# tenth of the threshold sqrt(eps) that forces a pass over the basis.
_LOCAL_CAP = 32.0

# Basis rows keep the scale the recurrence leaves them (see ``lanczos``) while it stays within
# [1 / _ROW_SCALE_LIMIT, _ROW_SCALE_LIMIT]; beyond, the row is scaled to unit norm.
_ROW_SCALE_LIMIT = 2.0**16

# Entries per BLAS dot in ``_norm``.
_NORM_CHUNK = 4096


def _chunks(v: torch.Tensor) -> int:
    """Chunks for the batched BLAS dots of ``_norm`` and ``_row_dots``, or 0 where they do not apply.

    Not for float64 (a plain reduction is accurate), GPUs (the reduction is a tree,
    accurate; matrix products may run in TF32 or bfloat16 when a lower float32 matmul
    precision is set), a lower precision on CPU, or short or non-contiguous vectors.
    """
    m = v.shape[0] // _NORM_CHUNK
    if m < 2 or v.dtype == torch.float64 or v.device.type != "cpu" or not v.is_contiguous() \
            or torch.get_float32_matmul_precision() != "highest":
        return 0
    return m


def _norm(v: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of a flat vector by BLAS dots over chunks, summed in float64.

    ``torch.linalg.vector_norm`` on CPU accumulates float32 with errors of 1.6e-5 at
    668,672 entries, and basis rows that far from unit norm break the recurrence's
    rounding model. ``square().sum()`` (a cascaded sum) is accurate to ~1e-7 but writes
    and reads a temporary: 0.28 ms there against 0.11 ms for dots of 4096 entries each
    (one batched product, no temporary) whose partial sums add up in float64, accurate
    to ~1e-8 (``tests/unit/test_spectra_lanczos.py``).
    """
    m = _chunks(v)
    if not m:
        return v.square().sum().sqrt()
    head = v[: m * _NORM_CHUNK].view(m, 1, _NORM_CHUNK)
    total = torch.bmm(head, head.transpose(1, 2)).sum(dtype=torch.float64)
    tail = v[m * _NORM_CHUNK :]
    if tail.numel():
        total = total + tail.double().square().sum()
    return total.sqrt()  # float64: a float32 result would round it by up to 6e-8


def _row_dots(rows: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``rows @ v`` in float64 for a few rows, by the chunked dots of ``_norm``.

    A float32 BLAS dot of 668,672 entries errs by up to 7e-6 of ``||v||^2`` as a squared
    norm and by ~1e-7 of ``||row|| ||v||`` on positive entries, where these are accurate to
    ~3e-9 (``tests/unit/test_spectra_lanczos.py``): the local correction's test measures
    an overlap of rounding size. The chunks of all rows go through one batched product
    (each chunk of ``v`` multiplies the rows' chunks while in cache): with ``rows =
    basis[j : j + 2]`` and ``v = basis[j + 1]``, ``q_j . w`` and ``||w||^2`` in one pass,
    0.29 ms against 0.44 for a dot and ``_norm``.
    """
    if v.dtype == torch.float64:
        return rows @ v
    m = _chunks(v) if rows.stride(1) == 1 else 0
    if not m:  # no matrix product: it might run in TF32 or bfloat16
        return (rows * v).sum(1, dtype=torch.float64)
    a = v[: m * _NORM_CHUNK].view(m, 1, _NORM_CHUNK)
    b = rows[:, : m * _NORM_CHUNK].unflatten(1, (m, _NORM_CHUNK)).permute(1, 2, 0)  # (m, chunk, r)
    total = torch.bmm(a, b).sum(0, dtype=torch.float64)[0]
    tail = v[m * _NORM_CHUNK :]
    if tail.numel():
        total = total + rows[:, m * _NORM_CHUNK :].double() @ tail.double()
    return total


class LanczosWorkspace:
    """A Krylov basis buffer kept between calls to ``lanczos``.

    Fresh memory costs a page fault per page on first write: 1.5 ms per basis row of
    668,672 float32 entries on the 2-core CPU machine, 7% of one Hessian-vector product
    there, against 0.3 ms for a row already touched. A caller that measures again and
    again (``SpectraCallback``, every ``every`` steps) passes one workspace and pays the
    faults once. It holds the largest basis asked of it (``rows x dim`` in the
    operator's dtype) until ``release`` or until it is dropped; one workspace serves one
    call at a time.
    """

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def basis(self, rows: int, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A ``(rows, dim)`` matrix, reused when the kept one is large enough."""
        buf = self._buffer
        if buf is None or buf.shape[0] < rows or buf.shape[1] != dim or buf.dtype != dtype \
                or buf.device != device:
            self._buffer = None  # free the old one before allocating the new
            buf = self._buffer = torch.empty(rows, dim, dtype=dtype, device=device)
        return buf[:rows]

    def release(self) -> None:
        """Drop the kept basis."""
        self._buffer = None


@dataclass(frozen=True)
class LanczosResult:
    """Top-k Ritz pairs of a symmetric operator.

    Attributes:
        eigenvalues: Shape ``(k,)``, float64, algebraically largest first.
        eigenvectors: Shape ``(k, dim)``, unit rows (Ritz vectors), in the basis dtype
            (the operator's: float32 for a float32 model).
        residuals: Shape ``(k,)``, ``|beta_m * s_{m,i}|`` = ``||A y_i - theta_i y_i||``.
        n_matvec: Matrix-vector products taken.
        converged: Whether every pair met the stopping rule (see ``lanczos``).
        errors: Shape ``(k,)``, float64: the estimated bound on ``|theta_i - lambda_i|``
            that the stopping rule compared with ``tol * |theta_i| + atol``.
        next_eigenvalue: The (k+1)-th Ritz value (the guard pair), or None when the
            basis was too small to have one.
        next_eigenvector: Its Ritz vector, shape ``(dim,)``, in the basis dtype (a warm start for
            the next measurement when two top eigenvalues may swap), or None.
        ritz_vectors: The top-k Ritz vectors and the guard pair's, ``(k + 1, dim)`` (``(k,
            dim)`` without a guard pair): the matrix whose rows ``eigenvectors`` and
            ``next_eigenvector`` are, to pass on whole as the next call's ``v0``.
        n_reorth: Steps that orthogonalised against the whole basis (the others cost
            the product and O(dim) vector work only).
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    n_matvec: int
    converged: bool
    errors: torch.Tensor | None = None
    next_eigenvalue: float | None = None
    next_eigenvector: torch.Tensor | None = None
    n_reorth: int = 0
    ritz_vectors: torch.Tensor | None = None


def eigenvalue_errors(theta: torch.Tensor, residuals: torch.Tensor, k: int) -> torch.Tensor:
    """Error bounds of the top-k Ritz values from their residuals and the Ritz gaps.

    For a Ritz pair with residual r the eigenvalue error is at most r, and at most
    r^2 / delta when delta, the distance from theta to every other eigenvalue, exceeds r
    (Kato-Temple). delta is not known; the Ritz values of neighbouring pairs estimate
    it. Lanczos' Ritz values lie inside the spectrum and approach it from within, so a
    neighbour that has not converged makes the Ritz gap too wide. Each gap is therefore
    shrunk by the neighbour's own residual (its distance to an eigenvalue): while the
    next pair is unconverged the bound falls back to r, and it drops to r^2 / gap only
    once the top pairs are both converged and ordered.

    Args:
        theta: Ritz values, descending, shape ``(n,)`` with ``n >= k``; ``theta[k]``
            (when present) is the guard pair below the wanted ones.
        residuals: Their residuals, shape ``(n,)``.
        k: Number of wanted pairs.

    Returns:
        Shape ``(k,)``: the error bound of each wanted Ritz value.
    """
    errors = _eigenvalue_errors(theta.detach().cpu().double().numpy(),
                                residuals.detach().cpu().double().numpy(), k)
    return torch.from_numpy(errors).to(device=residuals.device)


def _eigenvalue_errors(theta: np.ndarray, residuals: np.ndarray, k: int) -> np.ndarray:
    """``eigenvalue_errors`` on float64 arrays (the loop's bookkeeping stays in NumPy)."""
    n = theta.shape[0]
    errors = residuals[:k].copy()
    for i in range(k):
        gaps = []
        if i + 1 < n:
            gaps.append(theta[i] - theta[i + 1] - residuals[i + 1])
        if i > 0:
            gaps.append(theta[i - 1] - residuals[i - 1] - theta[i])
        if not gaps:  # no neighbour yet: nothing tells how close the next eigenvalue is
            continue
        gap, r = min(gaps), residuals[i]
        if gap > r:
            errors[i] = r * r / gap
    return errors


class _Tridiagonal:
    """The Lanczos matrix T, grown a step at a time.

    It keeps the diagonal, the off-diagonal and, while small, T itself, so a step writes
    three numbers instead of building T again.

    ``eigh`` takes dense LAPACK for small T (25 us at 10 x 10) and MRRR on the tridiagonal
    beyond (0.18 ms against 0.28 at 40, 2.4 ms against 7.3 at 250); torch.linalg.eigh took
    0.16 ms at 10.
    """

    _DENSE = 32

    def __init__(self, size: int) -> None:
        self.alphas = np.empty(size)  # alphas[j] = q_j . A q_j
        self.betas = np.empty(size)  # betas[j] couples q_j and q_{j+1}; 0 after a restart
        self.n = 0
        d = min(size, self._DENSE)
        self._dense = np.zeros((d, d))

    def push_alpha(self, alpha: float) -> None:
        j = self.n
        self.alphas[j] = alpha
        if j < self._DENSE:
            self._dense[j, j] = alpha
        self.n = j + 1

    def push_beta(self, beta: float) -> None:
        j = self.n - 1
        self.betas[j] = beta
        if j + 1 < self._DENSE:
            self._dense[j, j + 1] = self._dense[j + 1, j] = beta

    def eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenpairs of T, ascending."""
        n = self.n
        if n <= self._DENSE:
            return np.linalg.eigh(self._dense[:n, :n])
        return scipy.linalg.eigh_tridiagonal(self.alphas[:n], self.betas[: n - 1])


def lanczos(
    matvec: LinearOperator | Callable[[torch.Tensor], torch.Tensor],
    dim: int | None = None,
    k: int = 1,
    *,
    v0: torch.Tensor | None = None,
    tol: float | None = 1e-6,
    atol: float = 0.0,
    vector_tol: float | None = None,
    max_iter: int = 100,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    workspace: LanczosWorkspace | None = None,
) -> LanczosResult:
    """Top-k algebraically largest eigenpairs of a symmetric operator by Lanczos.

    The stop is on the eigenvalue: after each product the top k+2 Ritz pairs of the
    tridiagonal matrix T are formed, and pair i has converged when its error bound
    (``eigenvalue_errors``: the residual ``|beta_m * s_{m,i}|``, or residual^2 over the
    Ritz gap once its neighbours are converged too) is at most ``tol * |theta_i| + atol``.
    The (k+1)-th pair is a guard: it must converge as well, to ``GUARD_FACTOR`` times
    that accuracy. A single-vector residual test cannot tell that a Krylov space
    built from a start vector nearly orthogonal to the top eigenvector (a warm start
    after two eigenvalues swapped, or bad luck) has found only the second of two close
    eigenvalues; converging the next pair as well keeps it iterating until the top
    one shows (``tests/unit/test_spectra_lanczos.py``). Along the muP cross-entropy
    run of ``benchmarks/bench_spectra.py``, warm-started Lanczos returned the second
    eigenvalue (3.6% below the first, error 3.8e-2) at step 250 with no guard, or
    with the guard pair at 30x the accuracy, when warm-started from the top and guard
    vectors; at 10x, warm-started from the top vector alone, it met 1e-3 at all 28
    states, but in the scaling study it returned the second eigenvalue after the top two
    swapped (``SpectraCallback`` therefore starts from the top and guard vectors,
    ``traindyn.spectra.callback.start_vectors``).
    Unlike power iteration this returns the largest eigenvalues, not the largest in
    magnitude.

    The Krylov basis is one preallocated ``(max_iter, dim)`` matrix in the operator's
    dtype (float32 for a float32 model; float64 is kept only for T and its Ritz
    pairs), and the product's input is a row of it, so no vector changes dtype. Each
    step is the three-term recurrence with a local correction against q_j (O(dim)
    work: the first update writes the product into the next basis row, one dot for
    alpha, one axpy, q_j . w and ||w||^2 in one chunked float64 pass over the two adjacent
    rows (``_row_dots``); the correction's axpy only when the measured overlap exceeds the
    rounding the omega recurrence assumes; no pass to scale the new row to unit norm, as
    rows keep their scales, ``sigma_i q_i``, which the scalars take); the pass over the whole
    basis (classical Gram-Schmidt, a second pass by the DGKS test) runs only when Simon's
    omega recurrence estimates an overlap above sqrt(eps) (partial reorthogonalization):
    semi-orthogonality, so Ritz values as accurate as with full reorthogonalization
    and no spurious copies of converged eigenvalues. On the 668,672-parameter MLP
    Hessian in float32 a cold 10-step run needed no pass; along the benchmark's
    warm-started runs at tol 1e-3, 11 of 268 steps did; far past convergence about
    every second step does (``n_reorth``). Along those runs (a product 9.5 ms on the
    2-core host) a step's vector work took 1.6 ms (the two updates and the dot 1.06,
    the paired dots 0.44, the scale 0.14, which the row scales have since saved: 1.265x
    -> 1.255x one product along the runs, three rounds each, same products and errors),
    the omega recurrence and the passes 0.15-0.28, T's Ritz pairs and the stop 0.14 (T
    since grown in place, ``_Tridiagonal``: 1.254x -> 1.250x), and each call's start and
    Ritz vectors 0.5 ms a step. All of it is memory-bound (about 21 GB/s on one core,
    rows evicted by the product): alpha taken before the first update, with the updates
    as one 2-row ``addmm`` or as two axpys, was no faster, nor was a reused buffer for
    the Ritz vectors (0.04 ms a step, for results that would alias the workspace). Beyond 10
    steps the pass over the basis (it reads every row twice) is most of what a step
    adds; lowering the recurrence's rounding term (8 eps) to 1 eps did not make passes
    rarer (24 against 25 in 60 steps). Selective orthogonalization (against converged
    Ritz vectors only) was tried instead of the pass: the Hessian's spectrum
    has outliers at both ends, 10-13 Ritz vectors converged within 40 steps, and a
    prototype orthogonalizing against each of them every step was no faster.
    If the Krylov space becomes invariant before the pairs have converged, it
    continues from a random vector orthogonal to the basis.

    Memory: the basis holds up to ``max_iter`` vectors of length ``dim`` in ``dtype``
    (pages are touched only as rows are filled), in ``workspace`` when one is given.

    Args:
        matvec: The operator: a ``LinearOperator`` (dim, dtype, device taken from it)
            or a function ``v -> A v`` on flat vectors. Linear: it is given basis rows,
            multiples of the Lanczos vectors, not unit vectors.
        dim: Vector length; required unless ``matvec`` is a ``LinearOperator``.
        k: Number of eigenpairs.
        v0: Start vector of shape ``(dim,)``, or ``(n, dim)`` rows whose sum is the start
            (e.g. the previous measurement's ``ritz_vectors``: summed straight into the
            basis, with no temporary); random normal if None or zero.
        tol: Relative accuracy asked of each eigenvalue: ``|theta_i - lambda_i|``
            estimated at most ``tol * |theta_i| + atol``. An estimate (the Ritz gap
            stands in for the true one, and a Krylov space that holds little of the top
            eigenvector shows the second instead): along the benchmark's runs the error
            reached 1.1 * tol at one of 28 states, where lambda_1 and lambda_2 were 0.9%
            apart; over the scaling study's measurements (warm-started, tol 1e-3,
            ``benchmarks/spectra_accuracy.py``) 8 of 2,574 missed it, by up to 7.4%, all
            at close pairs (see ``traindyn.spectra.callback.start_vectors``).
            None: no eigenvalue test and no guard pair, only the residual test
            (``vector_tol``, required then): ARPACK's rule, for comparing solvers at
            the same stop (``benchmarks/bench_spectra.py``).
        atol: Absolute accuracy added to ``tol * |theta_i|`` (guards eigenvalues near zero).
        vector_tol: If set, also require every residual ``||A y_i - theta_i y_i||`` to be
            at most ``vector_tol * |theta_i| + atol`` (accurate eigenvectors, not only values).
        max_iter: Most products (and basis vectors); capped at ``dim``.
        generator: Random source for the start (and restart) vectors; a generator
            seeded with 0 if None. Vectors are drawn on the CPU, so a seed gives the
            same start on every device.
        dtype: Dtype of the basis and of the vectors passed to ``matvec`` (default: the
            operator's, else float64).
        device: Device of the vectors (default: the operator's, else ``v0``'s or CPU).
        callback: Called after each product as ``callback(n_matvec, theta)`` with the
            current top-k Ritz values (float64, descending, fewer at the start).
        workspace: Keeps the basis between calls (see ``LanczosWorkspace``); a fresh
            basis each call if None.

    Returns:
        The Ritz pairs, the number of products and the convergence flag; if not
        converged after ``max_iter`` products, the best current approximations.

    Raises:
        ValueError: If ``dim`` is missing, ``k`` is not in ``[1, dim]``, ``v0`` has
            the wrong shape, or neither ``tol`` nor ``vector_tol`` is set.
        FloatingPointError: If a product has a non-finite entry (e.g. a diverged model).
    """
    if isinstance(matvec, LinearOperator):
        dim = matvec.dim if dim is None else dim
        dtype = matvec.dtype if dtype is None else dtype
        device = matvec.device if device is None else device
    if dim is None:
        raise ValueError("dim is required when matvec is a plain function")
    if not 1 <= k <= dim:
        raise ValueError(f"k must be in [1, dim={dim}], got {k}")
    if tol is None and vector_tol is None:
        raise ValueError("tol=None (no eigenvalue test) needs vector_tol (the residual test)")
    if device is None:
        device = v0.device if v0 is not None else torch.device("cpu")
    device = torch.device(device)
    dtype = torch.float64 if dtype is None else dtype
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    m_max = max(k, min(max_iter, dim))

    def random_vector() -> torch.Tensor:
        # float32 draws are 5x faster than float64 ones and any start vector will do.
        return torch.randn(dim, generator=generator).to(device=device, dtype=dtype)

    # Partial reorthogonalization (Simon 1984): while every |q_i . q_j| stays below
    # sqrt(eps) the Ritz values are as accurate as with exact orthogonality, so the pass
    # over the basis is needed only when that level is about to be crossed. The overlaps
    # are not measured (that is itself a pass over the basis) but estimated by Simon's
    # omega recurrence, O(j) scalars per step; when an estimate exceeds eta the new
    # vector is orthogonalised against the whole basis and its estimates reset to
    # rounding level (the recurrence carries the previous vector's overlaps on, so the
    # next vector needs no forced pass of its own). float64 operators serve as references, whose
    # Ritz vectors should be orthogonal to ~1e-12: there eta is eps^(3/4).
    eps = torch.finfo(dtype).eps
    eta = eps**0.75 if dtype == torch.float64 else math.sqrt(eps)
    # Rounding in one step: a product in dtype carries an error of a few eps * ||A||, so a
    # fresh overlap is about that over beta (measured on the MLP Hessian in float32: up to
    # ~4 eps ||A|| / beta); 8 eps keeps the estimates above the measured overlaps.
    unit = 8.0 * eps

    def orthogonalise_(w: torch.Tensor, rows: torch.Tensor, scales: list[float],
                       norm_before: torch.Tensor) -> torch.Tensor:
        # Classical Gram-Schmidt against the whole basis: one product R w for the overlaps,
        # one update w -= R^T (h / sigma^2) (rows are sigma_i q_i, sigma_i = scales[i]), and
        # a second pass only when the DGKS test (1/sqrt(2)) sees cancellation. In place, as
        # fresh vectors cost page faults.
        inv_sq = torch.tensor(scales, dtype=torch.float64).pow(-2)
        inv_sq = inv_sq.to(device=device, dtype=dtype)
        for _ in range(2):
            h = rows @ w  # (j+1,): sigma_i (q_i . w)
            w.addmv_(rows.T, h * inv_sq, alpha=-1.0)
            norm_after = _norm(w)
            if norm_after > 0.7071 * norm_before:
                break
            norm_before = norm_after
        return norm_after

    # Rows are written one by one; torch.empty leaves the pages untouched until then.
    if workspace is not None:
        basis = workspace.basis(m_max, dim, dtype, device)  # (m, dim)
    else:
        basis = torch.empty(m_max, dim, dtype=dtype, device=device)
    # The start is written into the first basis row: a row already touched, where a fresh
    # vector would cost page faults (see LanczosWorkspace). It keeps its norm as its scale
    # (see "Row scales" below).
    started, s0 = False, 1.0
    if v0 is not None:
        if not (v0.shape == (dim,) or v0.ndim == 2 and v0.shape[0] >= 1 and v0.shape[1] == dim):
            raise ValueError(f"v0 must have shape ({dim},) or (n, {dim}) with n >= 1, "
                             f"got {tuple(v0.shape)}")
        v0 = v0.detach().to(device=device, dtype=dtype)
        if v0.ndim == 1 or v0.shape[0] == 1:
            basis[0].copy_(v0.view(dim))
        else:  # one pass per row (torch.sum over rows took twice as long as an add)
            torch.add(v0[0], v0[1], out=basis[0])
            for row in v0[2:]:
                basis[0].add_(row)
        norm = float(_norm(basis[0]))
        started = math.isfinite(norm) and norm > 0
        if started and 1.0 / _ROW_SCALE_LIMIT <= norm <= _ROW_SCALE_LIMIT:
            s0 = norm
        elif started:
            basis[0].div_(norm)
    if not started:
        q = random_vector()
        torch.div(q, _norm(q), out=basis[0])
    tri = _Tridiagonal(m_max)
    alphas, betas = tri.alphas, tri.betas  # filled up to the current step
    # omega[i] estimates q_i . q_j for the newest q_j, omega_prev the same for q_{j-1}.
    omega = np.ones(1)
    omega_prev = np.zeros(0)
    n_reorth = 0
    scale = 0.0
    # Row scales: basis row i holds sigma[i] * q_i. The next row is left as the recurrence
    # writes it (kappa times w below) and its scale goes into the scalars that use it,
    # which saves a pass over the row a step; the product is linear, so it takes the
    # scaled row as well. kappa = -sigma[j-1] / beta_j makes sigma[j+1] / sigma[j-1] =
    # -beta_{j+1} / beta_j, a ratio of neighbouring betas, so the scales wander slowly (a
    # step without a q_{j-1} term, the first and after a restart, multiplies the next
    # row's by beta); a row is scaled to unit norm whenever its scale leaves the range of
    # _ROW_SCALE_LIMIT.
    sigma: list[float] = [s0]
    theta = s_top = residuals = errors = None
    converged = False
    for j in range(m_max):
        q = basis[j]  # sigma[j] * q_j
        s_j = sigma[j]
        w = matvec(q)  # sigma[j] * A q_j
        if w.dtype != dtype or w.device != device:
            w = w.to(device=device, dtype=dtype)
        # The first update writes into the next basis row (the product is read once); the
        # last step has no next row. Then w = kappa * (A q_j - alpha q_j - beta_j q_{j-1}).
        target = basis[j + 1] if j + 1 < m_max else torch.empty_like(w)
        beta_j = float(betas[j - 1]) if j > 0 else 0.0  # couples q_{j-1} and q_j
        if beta_j != 0.0:
            kappa = -sigma[j - 1] / beta_j
            torch.add(basis[j - 1], w, alpha=-sigma[j - 1] / (beta_j * s_j), out=target)
            w = target
            alpha = float(q @ w) / (s_j * kappa)
            w.add_(q, alpha=-kappa * alpha / s_j)
        else:
            kappa = s_j
            alpha = float(q @ w) / (s_j * s_j)
            w = torch.add(w, q, alpha=-alpha, out=target)
        # Local reorthogonalization against q_j. The recurrence below takes q_{j+1} . q_j
        # to be at most psi = unit * max(1, scale / beta), the rounding one product leaves
        # (Simon); that overlap is correction / beta, measured to ~1e-8 of ||w||
        # (_row_dots), and the axpy runs only when it exceeds psi, capped at _LOCAL_CAP
        # unit so that a small beta cannot leave an overlap near the pass's threshold eta
        # unrepaired (then ||w||^2 drops by correction^2 exactly, as ||q_j|| = 1).
        if j + 1 < m_max:  # q_j and w are adjacent rows: both dots in one pass
            overlap, norm_sq = _row_dots(basis[j : j + 2], w).tolist()
        else:
            overlap, norm_sq = float(_row_dots(q[None], w)), float(_norm(w)) ** 2
        correction = overlap / (s_j * kappa)  # q_j . w / kappa
        beta = math.sqrt(norm_sq) / abs(kappa)
        scale = max(scale, abs(alpha))  # the largest |alpha|: ||A|| as far as T shows it
        if abs(correction) > unit * min(max(beta, scale), _LOCAL_CAP * beta):
            w.add_(q, alpha=-overlap / (s_j * s_j))
            alpha += correction
            beta = math.sqrt(max(beta * beta - correction * correction, 0.0))
        if not (math.isfinite(alpha) and math.isfinite(beta)):
            raise FloatingPointError(f"the operator returned non-finite values at product {j + 1}")
        tri.push_alpha(alpha)
        q_basis = basis[: j + 1]
        restart = beta <= 1e-12 * scale or beta == 0.0
        if j + 1 < m_max and not restart:
            # Simon's recurrence for q_i . q_{j+1}, i < j, plus a rounding term.
            new = np.empty(j + 2)
            if j > 0:
                t = betas[:j] * omega[1 : j + 1] + (alphas[:j] - alpha) * omega[:j]
                t[1:] += betas[: j - 1] * omega[: j - 1]
                t -= beta_j * omega_prev[:j]
                t += np.sign(t) * unit * (betas[:j] + beta)
                new[:j] = t / beta
            psi = unit * max(1.0, scale / beta)
            new[j] = psi  # q_{j+1} . q_j after the local correction
            new[j + 1] = 1.0
            if j > 0 and float(np.abs(new[:j]).max()) > eta:
                beta = float(orthogonalise_(w, q_basis, sigma, torch.tensor(beta * abs(kappa)))) / abs(kappa)
                n_reorth += 1
                new[: j + 1] = unit * max(1.0, scale / beta)
            omega_prev, omega = omega, new

        # The Ritz pairs of T, in NumPy: a few small arrays a step, where torch's
        # per-operation dispatch cost more than the arithmetic.
        n_top = min(k + 2, j + 1)  # the wanted pairs, the guard pair and its neighbour
        evals, evecs = tri.eigh()  # ascending
        theta, s_top = evals[::-1][:n_top], evecs[:, ::-1][:, :n_top]  # s_top: (j+1, n_top)
        residuals = np.abs(beta * s_top[-1])
        if callback is not None:
            callback(j + 1, torch.from_numpy(theta[:k].copy()))
        if j + 1 >= k:
            n_check = min(k + 1, n_top)
            errors = _eigenvalue_errors(theta, residuals, n_check)  # (n_check,)
            # Until the guard pair exists (a basis of k vectors) nothing has converged.
            ok = n_check == k + 1 or j + 1 == dim
            if tol is not None:
                bound = tol * np.abs(theta[:n_check]) + atol
                bound[k:] *= GUARD_FACTOR
                ok = ok and bool((errors <= bound).all())
            errors = errors[:k]
            if vector_tol is not None:
                ok = ok and bool((residuals[:k] <= vector_tol * np.abs(theta[:k]) + atol).all())
            if ok:
                converged = True
                break
        if j + 1 == m_max:
            break
        if restart:
            # Invariant subspace: restart orthogonally so the other eigenvalues stay reachable.
            r = random_vector()
            orthogonalise_(r, q_basis, sigma, _norm(r))
            orthogonalise_(r, q_basis, sigma, _norm(r))
            n_reorth += 2
            tri.push_beta(0.0)
            torch.div(r, _norm(r), out=basis[j + 1])
            sigma.append(1.0)
            omega_prev, omega = omega, np.concatenate([np.full(j + 1, unit), [1.0]])
        else:
            tri.push_beta(beta)
            s_next = kappa * beta  # w (basis[j + 1]) = s_next * q_{j+1}
            if not 1.0 / _ROW_SCALE_LIMIT <= abs(s_next) <= _ROW_SCALE_LIMIT:
                w.div_(s_next)
                s_next = 1.0
            sigma.append(s_next)

    m = tri.n
    theta, s_top = theta[: k + 1], s_top[:, : k + 1]
    # One (k+1, m) x (m, dim) product in the basis dtype, which reads the basis once;
    # the rows stay in that dtype (a float64 copy of float32 vectors carries no accuracy).
    coefficients = torch.from_numpy(s_top.T / np.asarray(sigma[:m])).to(device=device, dtype=dtype)
    vectors = coefficients @ basis[:m]
    for row in vectors:
        row /= _norm(row)
    has_next = theta.shape[0] > k

    def as_tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.copy()).to(device)

    return LanczosResult(
        eigenvalues=as_tensor(theta[:k]),
        eigenvectors=vectors[:k],
        residuals=as_tensor(residuals[:k]),
        n_matvec=m,
        converged=converged,
        errors=as_tensor(errors) if errors is not None else None,
        next_eigenvalue=float(theta[k]) if has_next else None,
        next_eigenvector=vectors[k] if has_next else None,
        n_reorth=n_reorth,
        ritz_vectors=vectors,
    )
