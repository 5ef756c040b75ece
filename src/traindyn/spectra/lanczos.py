"""Lanczos with partial reorthogonalization for the algebraically largest eigenvalues.

A converged answer is verified by a second run from a random start on the operator deflated
by it (``lanczos``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch

from traindyn.spectra.flat import LinearOperator

__all__ = ["LanczosResult", "LanczosWorkspace", "eigenvalue_errors", "lanczos"]

# The guard pair (the (k+1)-th) must reach this many times the requested accuracy.
# Without the verification (``verify=False``) 10 is the loosest that passes the close-pair
# tests in tests/unit/test_spectra_lanczos.py (a start nearly orthogonal to the top vector;
# a cold start at tol 1e-2): along bench_spectra.py's runs (its guard sweep; top-vector
# warm starts, 28 states, tol 1e-3) 283 products at 10x, 255 at 20x, 239 at 30x, 165 with
# none, but 15x already returns the second of two eigenvalues 3.6% apart, and with no guard
# the error reached 7.5e-3. With the verification the guard no longer decides correctness
# but it still pays: the converged guard pair is deflated, so the verification run's floor
# stands clear of lambda_3 rather than lambda_2 (bench-like width-256 runs, 28 states:
# 504 products at 10x, 512 at 3x, 499 at 30x, 549 with none).
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
        self._aux: LanczosWorkspace | None = None

    def aux(self) -> LanczosWorkspace:
        """A second workspace, for the verification run (``lanczos``' ``verify``), kept alike."""
        if self._aux is None:
            self._aux = LanczosWorkspace()
        return self._aux

    def basis(self, rows: int, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A ``(rows, dim)`` matrix, reused when the kept one is large enough."""
        buf = self._buffer
        if buf is None or buf.shape[0] < rows or buf.shape[1] != dim or buf.dtype != dtype \
                or buf.device != device:
            self._buffer = None  # free the old one before allocating the new
            buf = self._buffer = torch.empty(rows, dim, dtype=dtype, device=device)
        return buf[:rows]

    def release(self) -> None:
        """Drop the kept bases."""
        self._buffer = None
        if self._aux is not None:
            self._aux.release()


@dataclass(frozen=True)
class LanczosResult:
    """Top-k Ritz pairs of a symmetric operator.

    Attributes:
        eigenvalues: Shape ``(k,)``, float64, algebraically largest first.
        eigenvectors: Shape ``(k, dim)``, unit rows (Ritz vectors), in the basis dtype
            (the operator's: float32 for a float32 model).
        residuals: Shape ``(k,)``, ``|beta_m * s_{m,i}|`` = ``||A y_i - theta_i y_i||``.
        n_matvec: Matrix-vector products taken, by every run (the verification's included).
        converged: Whether every pair met the stopping rule and, where it ran, the
            verification passed (see ``lanczos``).
        errors: Shape ``(k,)``, float64: the estimated bound on ``|theta_i - lambda_i|``
            that the stopping rule compared with ``tol * |theta_i| + atol`` (after the
            verification: the union's, with the verified floor among the gaps).
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


def _eigenvalue_errors(theta: np.ndarray, residuals: np.ndarray, k: int, floor: float | None = None) -> np.ndarray:
    """``eigenvalue_errors`` on float64 arrays (the loop's bookkeeping stays in NumPy).

    ``floor``: no eigenvalue other than those the Ritz values stand for lies above it (the
    verification's finding, see ``lanczos``), so it bounds the gaps as well.
    """
    n = theta.shape[0]
    errors = residuals[:k].copy()
    for i in range(k):
        gaps = [] if floor is None else [theta[i] - floor]
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
    verify: bool | None = None,
) -> LanczosResult:
    """Top-k algebraically largest eigenpairs of a symmetric operator by Lanczos.

    The stop is on the eigenvalue: after each product the top k+2 Ritz pairs of the
    tridiagonal matrix T are formed, and pair i has converged when its error bound
    (``eigenvalue_errors``: the residual ``|beta_m * s_{m,i}|``, or residual^2 over the
    Ritz gap once its neighbours are converged too) is at most ``tol * |theta_i| + atol``.
    The (k+1)-th pair is a guard: it must converge as well, to ``GUARD_FACTOR`` times
    that accuracy.

    No test on one Krylov space can tell that it holds little of the top eigenvector: from a
    warm start that does (after two eigenvalues swapped), Lanczos finds the second of two
    close eigenvalues, or a mix of the two, with a small residual and a wide Ritz gap, and
    Kato-Temple's residual^2 / gap trusts a gap that is not there. Over the scaling study's
    measurements (``benchmarks/spectra_accuracy.py``, tol 1e-3) this stop alone missed 8 of
    2,574, by up to 7.4%, every one a close pair found in 3-8 products. So a converged
    answer is verified (``verify``, on whenever ``tol`` > 0):

    1. A second run starts from a Gaussian vector on the operator deflated by the answer's
       k+1 Ritz vectors Y (``P A`` with ``P = I - Y^T (Y Y^T)^-1 Y``): a hidden top
       eigenvector is orthogonal to Y, so it is the deflated operator's top, well clear of
       the rest of its spectrum (the gap to lambda_3, not to lambda_2), and the random start
       holds a part of it. The run stops when its top Ritz value reaches the floor
       ``min(theta_k + bound_k, min_i theta_i - r_i^2 / bound_i)`` (bound_i = tol |theta_i| +
       atol, r_i the residuals): above it an eigenvalue the answer does not stand for would
       either beat the answer by more than the tolerance or invalidate its Kato-Temple gap.
       Or it stops when the chance that such an eigenvalue escaped it is at most
       ``VERIFY_RISK`` (``_hidden_risk``: the Christoffel function of the run's own T bounds
       the start's weight above the floor, and a Gaussian start puts at least that much on
       any one eigenvector only with small probability).
    2. Rayleigh-Ritz on the union of both runs' Ritz vectors (``_union``; no product: each
       run's Lanczos relation gives the images) resolves a close pair that the first run
       mixed. The answer is the union's; its error bounds use the floor as a neighbour, and
       must meet the tolerance.
    3. If the second run found something above the floor (or the union's bounds fail), the
       first run is repeated from the union's top k+1 vectors and verified again (at most
       ``_ROUNDS`` rounds; then ``converged`` is False).

    On the adversarial cases of ``tests/unit/test_spectra_lanczos.py`` (a start exactly
    orthogonal to the top eigenvector, pairs 0.1-5% apart, a cluster of three, a large
    negative outlier; tol 1e-4, where the single run's stop returns lambda_2 or a mix every
    time) it returned lambda_1 from 276 of 280 random starts of the second run (40 seeds,
    float32 and float64 alike): the 4 misses are one seed whose start holds almost none of
    the top eigenvector, the event ``VERIFY_RISK`` bounds. With the top eigenvector exactly
    hidden from a 100,000-dimensional diagonal operator (lambda_2 3% below), the second run
    missed it from 2 of 300 random starts at ``VERIFY_RISK`` = 0.01, 11 of 200 at 0.1 and 35
    of 200 at 0.3: half to two thirds of the bound. The price is the second run, 4-11
    products on the scaling study's operators (it must resolve the deflated spectrum just
    below the floor, so flat tops, as in the MSE runs, cost the most): along the width-128
    runs of the scaling study 2.0x the products of the single run (Hessian and Gauss-Newton
    alike), along bench-like width-256 runs (bench_spectra.py's four runs at width 256, 28
    states, the callback's warm starts) 504 products against 250. ``n_matvec`` counts
    every run.
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
            estimated at most ``tol * |theta_i| + atol`` (see above: the run's own bound,
            then the verification's). 0: run to ``max_iter`` (nothing is verified).
            None: no eigenvalue test, no guard pair and no verification, only the
            residual test (``vector_tol``, required then): ARPACK's rule, for comparing
            solvers at the same stop (``benchmarks/bench_spectra.py``).
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
        verify: Verify a converged answer (see above); default: whenever ``tol`` or
            ``atol`` is positive. False: the single run's stop alone (the old rule).

    Returns:
        The Ritz pairs, the number of products (of every run) and the convergence flag;
        if not converged after ``max_iter`` products (a run), or not verified within
        ``_ROUNDS`` rounds, the best current approximations.

    Raises:
        ValueError: If ``dim`` is missing, ``k`` is not in ``[1, dim]``, ``v0`` has
            the wrong shape, neither ``tol`` nor ``vector_tol`` is set, or ``verify`` is
            True without ``tol``.
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
    if verify is None:  # tol=0 runs to max_iter (a fixed step count): nothing to verify
        verify = tol is not None and (tol > 0 or atol > 0)
    if verify and tol is None:
        raise ValueError("verify=True needs tol (the eigenvalue test it completes)")
    res, tail = _lanczos_run(matvec, dim, k, v0, tol, atol, vector_tol, max_iter, generator, dtype,
                             device, callback, workspace)
    # Nothing to verify: no eigenvalue stop, no answer, or a Krylov space that is the whole
    # space (or leaves too little of it for a second run).
    if not verify or not res.converged or res.n_matvec >= dim or dim - tail.vectors.shape[0] < 2:
        return res
    return _verified(matvec, dim, k, tol, atol, vector_tol, max_iter, generator, dtype, device,
                     callback, workspace, res, tail)


def _lanczos_run(
    matvec: LinearOperator | Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    k: int,
    v0: torch.Tensor | None,
    tol: float | None,
    atol: float,
    vector_tol: float | None,
    max_iter: int,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
    callback: Callable[[int, torch.Tensor], None] | None,
    workspace: LanczosWorkspace | None,
    floor: float | None = None,
    n_free: int = 0,
) -> tuple[LanczosResult, _Tail]:
    """One Lanczos run (``lanczos`` without the verification): the Ritz pairs and their tail.

    With ``floor`` set this is the verification run (see ``lanczos``; ``k`` = 1, ``tol`` and
    ``vector_tol`` unused): it stops when its top Ritz value reaches ``floor`` (``mode``
    ``"found"``) or when an eigenvalue at or above ``floor`` has escaped it with probability at
    most ``VERIFY_RISK`` (``"clear"``; ``_hidden_risk``, for a Gaussian start in ``n_free``
    dimensions).
    """
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
    mode: str | None = None  # how a verification run stopped: "found" or "clear"
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
        if floor is not None:
            # The verification run (see ``lanczos``): it stops once its top Ritz value reaches
            # the floor (it found what the warm run left out), or once an eigenvalue at or
            # above the floor is unlikely to have escaped it (``_hidden_risk``).
            if theta[0] >= floor:
                mode = "found"
            elif restart or _hidden_risk(alphas, betas, j + 1, floor, n_free) <= VERIFY_RISK:
                # (An invariant Krylov space holds every eigenvector the start has a part of.)
                mode = "clear"
            if mode is not None:
                converged = True
                break
        elif j + 1 >= k:
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
    formed = coefficients @ basis[:m]
    norms = []
    for row in formed:
        norms.append(float(_norm(row)))
        row /= norms[-1]
    # The Lanczos relation A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T gives each Ritz vector's
    # residual, A y_i - theta_i y_i = beta_m s_{m,i} q_{m+1}; w holds s_next q_{m+1}.
    if restart or beta == 0.0:
        tail = _Tail(theta=theta.copy(), coef=np.zeros(theta.shape[0]), next_row=None, mode=mode, vectors=formed)
    else:
        tail = _Tail(theta=theta.copy(), coef=s_top[-1] / kappa / np.asarray(norms), next_row=w, mode=mode,
                     vectors=formed)
    vectors = formed
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
    ), tail


# The verification run (see ``lanczos``) stops below the floor once the chance that an
# eigenvalue above it escaped the run is at most this (``_hidden_risk``). Its cost is set by
# how close the deflated spectrum comes to the floor more than by the risk: each halving costs
# about a quarter of a product (bench-like width-256 runs: 504 products at 0.01, 487 at 0.02).
VERIFY_RISK = 1e-2

# Verification rounds at most: a round that finds more than the answer restarts the warm run
# from the better vectors and verifies again.
_ROUNDS = 3

# Columns per chunk of ``_gram``.
_GRAM_CHUNK = 16384


def _hidden_risk(alphas: np.ndarray, betas: np.ndarray, m: int, b: float, n: int) -> float:
    """Chance that an eigenvalue >= ``b`` escaped a Lanczos run from a Gaussian start.

    After ``m`` products from the unit start r, the Lanczos vectors are P_j(A) r with P_j
    the orthonormal polynomials of r's spectral measure (``P_0 = 1``, ``beta_j P_{j+1}(x) =
    (x - alpha_j) P_j(x) - beta_{j-1} P_{j-1}(x)``). For b above every Ritz value, q(x) =
    K(b, x)^2 / K(b, b)^2 with K(b, x) = sum_{j<m} P_j(b) P_j(x) is >= 0 everywhere and >= 1
    on [b, inf) (each P_j is positive and increasing beyond its largest zero, a Ritz value
    below b), and its integral against the measure is 1 / K(b, b) (orthonormality). So the
    start's squared components on all eigenvectors with eigenvalues >= b sum to at most
    1 / K(b, b) (the Christoffel function; Markov-Stieltjes). For r a Gaussian vector in n
    dimensions (normalised) the squared component on a fixed unit vector is Beta(1/2,
    (n-1)/2), at most x with probability at most sqrt(2 n x / pi) (Gautschi's inequality),
    so an eigenvector at or above b escapes with probability at most sqrt(2 n / (pi K(b, b))).
    Unlike a worst-case Chebyshev bound, K grows at the rate of the spectrum the run has
    seen: a few products once its top is an outlier well below b, more when the spectrum
    comes close to b.
    """
    p_prev, p, total = 0.0, 1.0, 1.0
    for i in range(m - 1):
        beta = float(betas[i])
        if beta == 0.0:  # a restart: the bound holds for the Krylov space of the start
            break
        p_prev, p = p, ((b - float(alphas[i])) * p - (float(betas[i - 1]) * p_prev if i else 0.0)) / beta
        total += p * p
        if total > 1e200:
            return 0.0
    return min(1.0, math.sqrt(2.0 * n / (math.pi * total)))


@dataclass
class _Tail:
    """What ``_lanczos_run`` knows beyond its result: the Lanczos relation at its last step.

    ``A y_i = theta_i y_i + coef_i * next_row`` for the top k+1 Ritz pairs (``next_row`` is
    ``beta_m q_{m+1}`` up to a scale folded into ``coef``; None when the Krylov space is
    invariant, then ``coef`` is zero). ``vectors``: those k+1 Ritz vectors (unit rows).
    ``mode``: how a verification run stopped: ``"found"`` (its top Ritz value reached the
    floor), ``"clear"`` (``_hidden_risk`` at most ``VERIFY_RISK``, or an invariant Krylov
    space), None (out of products, or not a verification run).
    """

    theta: np.ndarray
    coef: np.ndarray
    next_row: torch.Tensor | None
    mode: str | None
    vectors: torch.Tensor


def _gram(rows: list[torch.Tensor]) -> np.ndarray:
    """Gram matrix of the rows of several ``(n_i, dim)`` or ``(dim,)`` tensors, in float64.

    Chunk by chunk through one small float64 buffer: every row is read once, and the dots
    are accurate in float64 whatever the rows' dtype or the matmul precision.
    """
    mats = [r.reshape(-1, r.shape[-1]) for r in rows]
    n, dim = sum(m.shape[0] for m in mats), mats[0].shape[1]
    chunk = min(dim, _GRAM_CHUNK)
    buf = torch.empty(n, chunk, dtype=torch.float64, device=mats[0].device)
    acc = torch.zeros(n, n, dtype=torch.float64, device=mats[0].device)
    for start in range(0, dim, chunk):
        stop = min(start + chunk, dim)
        i = 0
        for m in mats:
            buf[i : i + m.shape[0], : stop - start].copy_(m[:, start:stop])
            i += m.shape[0]
        block = buf[:, : stop - start]
        acc.addmm_(block, block.T)
    return acc.cpu().numpy()


def _union(y: torch.Tensor, y_tail: _Tail, y_inv_gram: np.ndarray, z: torch.Tensor, z_tail: _Tail,
           k: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Rayleigh-Ritz on span(y, z): the warm run's Ritz vectors and the verification run's.

    No product is needed. Each Ritz vector's image is known from its run's Lanczos relation
    (``_Tail``): ``A y_i = theta_i y_i + c_i q``; the verification run ran on ``P A`` with
    ``P`` the projector off span(y), so for z_j in range(P), ``A z_j = theta'_j z_j + c'_j q'
    + Y^T G^-1 (Y A z_j)`` (G the Gram matrix of the rows of y) with ``(Y A z_j)_i = (A y_i) .
    z_j``. Every image is thus a combination of the rows of ``E = [y; z; q; q']``, and the
    projected matrix, the Gram matrix and each union Ritz vector's residual norm follow from
    E's Gram matrix (``_gram``), one pass over a few rows.

    Returns:
        The union's Ritz values (descending), their residual norms, and the top ``k + 1``
        union Ritz vectors as rows (unit, in y's dtype).
    """
    ny, nz = y.shape[0], z.shape[0]
    nb = ny + nz
    rows: list[torch.Tensor] = [y, z]
    iq = iq2 = None
    if y_tail.next_row is not None:
        iq = nb
        rows.append(y_tail.next_row)
    if z_tail.next_row is not None:
        iq2 = nb + (iq is not None)
        rows.append(z_tail.next_row)
    h = _gram(rows)
    ne = h.shape[0]
    c = np.zeros((ne, nb))  # column b: the image A b in the rows of E
    for i in range(ny):
        c[i, i] = y_tail.theta[i]
        if iq is not None:
            c[iq, i] = y_tail.coef[i]
    for j in range(nz):
        c[ny + j, ny + j] = z_tail.theta[j]
        if iq2 is not None:
            c[iq2, ny + j] = z_tail.coef[j]
        ya_z = y_tail.theta[:ny] * h[:ny, ny + j]  # (A y_i) . z_j
        if iq is not None:
            ya_z = ya_z + y_tail.coef[:ny] * h[iq, ny + j]
        c[:ny, ny + j] += y_inv_gram @ ya_z
    g = h[:nb] @ c
    g = (g + g.T) / 2
    evals, evecs = scipy.linalg.eigh(g, h[:nb, :nb])
    evals, evecs = evals[::-1].copy(), evecs[:, ::-1].copy()  # descending; evecs^T M evecs = I
    d = c @ evecs
    d[:nb] -= evecs * evals
    residuals = np.sqrt(np.maximum(np.einsum("ib,ij,jb->b", d, h, d), 0.0))
    top = min(k + 1, nb)
    coef = torch.from_numpy(evecs[:, :top].T.copy()).to(device=y.device, dtype=y.dtype)
    vectors = coef[:, :ny] @ y + coef[:, ny:] @ z
    for row in vectors:
        row /= _norm(row)
    return evals, residuals, vectors


def _verified(matvec, dim: int, k: int, tol: float, atol: float, vector_tol: float | None, max_iter: int,
              generator: torch.Generator, dtype: torch.dtype, device: torch.device,
              callback: Callable[[int, torch.Tensor], None] | None, workspace: LanczosWorkspace | None,
              res: LanczosResult, tail: _Tail) -> LanczosResult:
    """``lanczos``' verification of a converged run ``res`` (see there); ``n_matvec`` counts all runs."""
    products, reorth = res.n_matvec, res.n_reorth
    aux = workspace.aux() if workspace is not None else None
    result = res
    for _ in range(_ROUNDS):
        y = tail.vectors  # (ny, dim): the top k and the guard pair
        ny = y.shape[0]
        gram = _gram([y])
        gram_inv = np.linalg.inv(gram)
        # Rows spanning y, orthonormal: yhat = L^-1 y with G = L L^T.
        yhat = torch.from_numpy(np.linalg.inv(np.linalg.cholesky(gram))).to(device=device, dtype=dtype) @ y

        def deflated(v: torch.Tensor, yhat: torch.Tensor = yhat) -> torch.Tensor:
            # P A v with P the projector off span(y): Lanczos gives it vectors of range(P) (up
            # to rounding, which the projection of each product keeps from growing), where
            # P A = P A P.
            w = matvec(v)
            if w.dtype != dtype or w.device != device:
                w = w.to(device=device, dtype=dtype)
            elif w is v:
                w = w.clone()
            return w.addmv_(yhat.T, _row_dots(yhat, w).to(dtype), alpha=-1.0)

        start = torch.randn(dim, generator=generator).to(device=device, dtype=dtype)
        for _ in range(2):
            start.addmv_(yhat.T, _row_dots(yhat, start).to(dtype), alpha=-1.0)
        # The floor: above theta_k + bound_k an eigenvalue beats the answer by more than the
        # tolerance; above theta_i - r_i^2 / bound_i it is closer to theta_i than the gap
        # that the Kato-Temple bound r_i^2 / gap <= bound_i needs.
        theta_w, r_w = tail.theta[:k], res.residuals.detach().cpu().double().numpy()
        bound_w = tol * np.abs(theta_w) + atol
        need = np.divide(r_w**2, bound_w, out=np.zeros_like(r_w), where=bound_w > 0)
        floor = float(min(theta_w[-1] + bound_w[-1], np.min(theta_w - need)))
        check, check_tail = _lanczos_run(deflated, dim, 1, start, tol, atol, None, min(max_iter, dim - ny), generator,
                                         dtype, device, None, aux, floor=floor, n_free=dim - ny)
        products += check.n_matvec
        reorth += check.n_reorth
        theta, residuals, vectors = _union(y, tail, gram_inv, check.ritz_vectors, check_tail, k)
        clear = check_tail.mode == "clear"
        errors = _eigenvalue_errors(theta, residuals, k, floor=floor if clear else None)
        ok = clear and bool((errors <= tol * np.abs(theta[:k]) + atol).all())
        if vector_tol is not None:
            ok = ok and bool((residuals[:k] <= vector_tol * np.abs(theta[:k]) + atol).all())
        has_next = vectors.shape[0] > k
        result = LanczosResult(
            eigenvalues=torch.from_numpy(theta[:k].copy()).to(device),
            eigenvectors=vectors[:k],
            residuals=torch.from_numpy(residuals[:k].copy()).to(device),
            n_matvec=products,
            converged=ok,
            errors=torch.from_numpy(errors.copy()).to(device),
            next_eigenvalue=float(theta[k]) if has_next else None,
            next_eigenvector=vectors[k] if has_next else None,
            n_reorth=reorth,
            ritz_vectors=vectors,
        )
        if ok or check_tail.mode is None:  # verified, or the verification ran out of products
            return result
        # The verification found an eigenvalue above the floor (or the union's answer is not
        # yet accurate): run again from the union's top vectors, with what it found among
        # them, and verify that.
        offset = products

        def shifted(m: int, theta: torch.Tensor, offset: int = offset) -> None:
            callback(offset + m, theta)

        res, tail = _lanczos_run(matvec, dim, k, vectors, tol, atol, vector_tol, max_iter, generator, dtype,
                                 device, shifted if callback is not None else None, workspace)
        products += res.n_matvec
        reorth += res.n_reorth
        if not res.converged or res.n_matvec >= dim:
            return dataclasses.replace(res, n_matvec=products, n_reorth=reorth)
    return dataclasses.replace(result, converged=False)
