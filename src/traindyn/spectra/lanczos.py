"""Lanczos with full reorthogonalization for the algebraically largest eigenvalues."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from traindyn.spectra.flat import LinearOperator

__all__ = ["LanczosResult", "lanczos"]


@dataclass(frozen=True)
class LanczosResult:
    """Top-k Ritz pairs of a symmetric operator.

    Attributes:
        eigenvalues: Shape ``(k,)``, float64, algebraically largest first.
        eigenvectors: Shape ``(k, dim)``, float64, unit rows (Ritz vectors).
        residuals: Shape ``(k,)``, ``|beta_m * s_{m,i}|`` = ``||A y_i - theta_i y_i||``.
        n_matvec: Matrix-vector products taken.
        converged: Whether every residual met ``tol * |theta_i| + atol``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    n_matvec: int
    converged: bool


def lanczos(
    matvec: LinearOperator | Callable[[torch.Tensor], torch.Tensor],
    dim: int | None = None,
    k: int = 1,
    *,
    v0: torch.Tensor | None = None,
    tol: float = 1e-6,
    atol: float = 0.0,
    max_iter: int = 100,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> LanczosResult:
    """Top-k algebraically largest eigenpairs of a symmetric operator by Lanczos.

    The Krylov basis and the tridiagonal matrix T are kept in float64 whatever
    dtype ``matvec`` computes in. After the three-term step every new vector is
    orthogonalised against the whole basis (full reorthogonalization: classical
    Gram-Schmidt, repeated once when the DGKS test sees cancellation), so no
    spurious copies of converged eigenvalues appear. After each product the Ritz pairs (theta_i, y_i)
    of T are checked: pair i has converged when
    ``|beta_m * s_{m,i}| <= tol * |theta_i| + atol`` (s_{m,i} the last component of
    T's eigenvector), which bounds ``||A y_i - theta_i y_i||``; the eigenvalue error
    is at most that residual, and about its square over the spectral gap. Unlike
    power iteration this returns the largest eigenvalues, not the largest in
    magnitude. If the Krylov space becomes invariant before k pairs have converged,
    it continues from a random vector orthogonal to the basis.

    Memory: the basis holds up to ``max_iter`` float64 vectors of length ``dim``.

    Args:
        matvec: The operator: a ``LinearOperator`` (dim, dtype, device taken from it)
            or a function ``v -> A v`` on flat vectors.
        dim: Vector length; required unless ``matvec`` is a ``LinearOperator``.
        k: Number of eigenpairs.
        v0: Start vector of shape ``(dim,)`` (e.g. the previous leading eigenvector,
            or the sum of the previous top-k ones); random normal if None or zero.
        tol: Relative tolerance on the Ritz residuals.
        atol: Absolute tolerance added to ``tol * |theta_i|`` (guards eigenvalues
            near zero).
        max_iter: Most products (and basis vectors); capped at ``dim``.
        generator: Random source for the start (and restart) vectors; a generator
            seeded with 0 if None. Vectors are drawn on the CPU, so a seed gives the
            same start on every device.
        dtype: Dtype passed to ``matvec`` (default: the operator's, else float64).
        device: Device of the vectors (default: the operator's, else ``v0``'s or CPU).
        callback: Called after each product as ``callback(n_matvec, theta)`` with the
            current top-k Ritz values (float64, descending, fewer at the start).

    Returns:
        The Ritz pairs, the number of products and the convergence flag; if not
        converged after ``max_iter`` products, the best current approximations.

    Raises:
        ValueError: If ``dim`` is missing, ``k`` is not in ``[1, dim]``, or ``v0`` has
            the wrong shape.
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
    if device is None:
        device = v0.device if v0 is not None else torch.device("cpu")
    device = torch.device(device)
    dtype = torch.float64 if dtype is None else dtype
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    m_max = max(k, min(max_iter, dim))

    def random_vector() -> torch.Tensor:
        # float32 draws are 5x faster than float64 ones and any start vector will do.
        return torch.randn(dim, generator=generator).to(device=device, dtype=torch.float64)

    def orthogonalise_(w: torch.Tensor, q_basis: torch.Tensor) -> torch.Tensor:
        # Classical Gram-Schmidt, repeated when the first pass cancelled much of w
        # (DGKS criterion, eta = 1/sqrt(2)); in place, as fresh vectors cost page faults.
        norm_before = torch.linalg.vector_norm(w)
        for _ in range(2):
            w.addmv_(q_basis.T, q_basis @ w, alpha=-1.0)
            norm_after = torch.linalg.vector_norm(w)
            if norm_after > 0.7071 * norm_before:
                break
            norm_before = norm_after
        return norm_after

    q = None
    if v0 is not None:
        if v0.shape != (dim,):
            raise ValueError(f"v0 must have shape ({dim},), got {tuple(v0.shape)}")
        q = v0.detach().to(device=device, dtype=torch.float64)
        norm = torch.linalg.vector_norm(q)
        q = q / norm if torch.isfinite(norm) and norm > 0 else None
    if q is None:
        q = random_vector()
        q = q / torch.linalg.vector_norm(q)

    capacity = min(m_max, 16)
    basis = torch.empty(capacity, dim, dtype=torch.float64, device=device)  # (m, dim)
    basis[0] = q
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples q_j and q_{j+1}; 0 after a restart
    theta = s_top = residuals = None
    converged = False
    # Reused buffers: a fresh multi-megabyte tensor per product costs page faults.
    w = torch.empty(dim, dtype=torch.float64, device=device)
    q_in = torch.empty(dim, dtype=dtype, device=device)  # the basis row, in the operator's dtype
    for j in range(m_max):
        q = basis[j]
        q_in.copy_(q)
        w.copy_(matvec(q_in))
        alpha = float(q @ w)
        # Three-term recurrence first, so that the full pass only removes rounding drift
        # and the DGKS test rarely asks for a second pass over the basis.
        w.add_(q, alpha=-alpha)
        if j > 0:
            w.add_(basis[j - 1], alpha=-betas[-1])
        q_basis = basis[: j + 1]
        beta = float(orthogonalise_(w, q_basis))
        if not (math.isfinite(alpha) and math.isfinite(beta)):
            raise FloatingPointError(f"the operator returned non-finite values at product {j + 1}")
        alphas.append(alpha)

        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if j > 0:
            off = torch.tensor(betas, dtype=torch.float64)
            t += torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(t)  # ascending
        n_top = min(k, j + 1)
        theta = evals.flip(0)[:n_top]
        s_top = evecs.flip(1)[:, :n_top]  # (j+1, n_top)
        residuals = (beta * s_top[-1]).abs()
        if callback is not None:
            callback(j + 1, theta.clone())
        if n_top == k and bool((residuals <= tol * theta.abs() + atol).all()):
            converged = True
            break
        if j + 1 == m_max:
            break
        if j + 1 == capacity:
            capacity = min(m_max, 2 * capacity)
            grown = torch.empty(capacity, dim, dtype=torch.float64, device=device)
            grown[: j + 1] = basis[: j + 1]
            basis, q_basis = grown, grown[: j + 1]
        scale = float(evals.abs().max())
        if beta <= 1e-12 * scale or beta == 0.0:
            # Invariant subspace: restart orthogonally so the other eigenvalues stay reachable.
            r = random_vector()
            orthogonalise_(r, q_basis)
            orthogonalise_(r, q_basis)
            betas.append(0.0)
            torch.div(r, torch.linalg.vector_norm(r), out=basis[j + 1])
        else:
            betas.append(beta)
            torch.div(w, beta, out=basis[j + 1])

    m = len(alphas)
    eigenvectors = s_top.T.to(device) @ basis[:m]  # (k, dim)
    eigenvectors = eigenvectors / torch.linalg.vector_norm(eigenvectors, dim=1, keepdim=True)
    return LanczosResult(
        eigenvalues=theta.to(device),
        eigenvectors=eigenvectors,
        residuals=residuals.to(device),
        n_matvec=m,
        converged=converged,
    )
