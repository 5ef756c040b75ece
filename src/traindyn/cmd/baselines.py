"""Trajectory baselines of CMD: PCA (rank d, with mean), exact DMD (rank r), EMA and SWA weights.

Errors are relative to the trajectory's variance around its temporal mean,
``sum_t ||w_t - w_hat_t||^2 / sum_t ||w_t - mean_t w_t||^2``, so that 1 means "no better
than the mean". PCA and DMD work on T x T Gram matrices accumulated in column chunks:
nothing of size N x T beyond the trajectory itself is formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fit import CHUNK, CMDFit

__all__ = [
    "DMDFit",
    "PCAFit",
    "cmd_error",
    "dmd_fit",
    "ema_weights",
    "gram",
    "heldout_errors",
    "pca_fit",
    "swa_weights",
    "total_variance",
]


def gram(w: np.ndarray, centre: bool, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """``(T, T)`` float64 Gram matrix of the rows of ``w`` (centred over time if asked), and the mean.

    Returns:
        ``(G, mean)``: G[s, t] = <x_s, x_t> with x = w (- its temporal mean); mean ``(N,)``.
    """
    t, n = w.shape
    g, mean = np.zeros((t, t)), np.empty(n)
    for lo in range(0, n, chunk):
        x = np.asarray(w[:, lo : lo + chunk], dtype=np.float64)  # (T, c)
        mean[lo : lo + chunk] = x.mean(0)
        if centre:
            x = x - mean[lo : lo + chunk]
        g += x @ x.T
    return g, mean


def total_variance(w: np.ndarray, chunk: int = CHUNK) -> float:
    """``sum_t ||w_t - mean||^2``, the normaliser of every reconstruction error."""
    g, _ = gram(w, centre=True, chunk=chunk)
    return float(np.trace(g))


def cmd_error(w: np.ndarray, fit: CMDFit, chunk: int = CHUNK) -> float:
    """Relative reconstruction error of a CMD fit over its own window (rows ``fit.start:``)."""
    x_all = w[fit.start : fit.start + len(fit.ref_traj)]
    num = den = 0.0
    for lo in range(0, w.shape[1], chunk):
        hi = min(w.shape[1], lo + chunk)
        x = np.asarray(x_all[:, lo:hi], dtype=np.float64)  # (T, c)
        lab = fit.labels[lo:hi]
        rec = fit.a[lo:hi] * fit.ref_traj[:, lab] + fit.b[lo:hi]
        num += float(((x - rec) ** 2).sum())
        den += float(((x - x.mean(0)) ** 2).sum())
    return num / den if den > 0 else 0.0


@dataclass
class PCAFit:
    """PCA of a trajectory: ``w_t ~ mean + sum_k u_k(t) s_k v_k``, eigenvalues from the centred Gram."""

    mean: np.ndarray  # (N,)
    u: np.ndarray  # (T, T) temporal singular vectors, by decreasing eigenvalue
    eig: np.ndarray  # (T,) eigenvalues s_k^2 of the centred Gram (>= 0)

    def error(self, d: int) -> float:
        """Relative reconstruction error at rank d (Eckart-Young: the energy left out)."""
        total = self.eig.sum()
        return float(self.eig[d:].sum() / total) if total > 0 else 0.0

    def reconstruct(self, w: np.ndarray, d: int, idx: np.ndarray) -> np.ndarray:
        """``(T, len(idx))`` rank-d reconstruction of the parameters ``idx``."""
        xc = np.asarray(w[:, idx], dtype=np.float64) - self.mean[idx]
        u = self.u[:, :d]
        return self.mean[idx] + u @ (u.T @ xc)

    @staticmethod
    def stored_numbers(n: int, t: int, d: int) -> int:
        """Mean, d spatial vectors and d temporal coefficients."""
        return n + n * d + d * t


def pca_fit(w: np.ndarray, chunk: int = CHUNK) -> PCAFit:
    """PCA of a ``(T, N)`` trajectory with its temporal mean removed."""
    g, mean = gram(w, centre=True, chunk=chunk)
    eig, u = np.linalg.eigh(g)
    order = np.argsort(eig)[::-1]
    return PCAFit(mean=mean, u=u[:, order], eig=np.clip(eig[order], 0.0, None))


@dataclass
class DMDFit:
    """Exact DMD (Tu et al. 2014) of rank r, kept in the T x T coordinates of the snapshots.

    The modes are ``Phi = X2 V S^-1 Y`` (``X2`` = snapshots 1..T-1 as columns); the
    reconstruction ``w_t ~ Phi diag(lam)^t beta`` with ``beta`` the least-squares fit to w_0.
    """

    lam: np.ndarray  # (r,) complex eigenvalues
    coef: np.ndarray  # (T-1, r) complex: Phi = X2 @ coef
    beta: np.ndarray  # (r,) complex amplitudes

    @property
    def rank(self) -> int:
        """The rank r."""
        return len(self.lam)

    def temporal(self, t: int) -> np.ndarray:
        """``(t, r)`` complex ``lam^k * beta`` for k = 0..t-1."""
        return (self.lam[None, :] ** np.arange(t)[:, None]) * self.beta

    def reconstruct(self, w: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """``(T, len(idx))`` real reconstruction of the parameters ``idx``."""
        phi = np.asarray(w[1:, idx], dtype=np.float64).T @ self.coef  # (len(idx), r)
        return (self.temporal(len(w)) @ phi.T).real

    def error(self, h: np.ndarray, variance: float) -> float:
        """Relative error from the uncentred Gram ``h`` of all T snapshots (no pass over N)."""
        t = len(h)
        c = self.temporal(t)  # (T, r)
        h2 = h[1:, 1:]  # X2^T X2
        php = self.coef.conj().T @ h2 @ self.coef  # Phi^H Phi (r, r)
        xphi = h[:, 1:] @ self.coef  # x_t^T Phi (T, r)
        res = np.diag(h) - 2 * np.einsum("tr,tr->t", xphi, c).real + np.einsum("tr,rs,ts->t", c.conj(), php, c).real
        return float(np.clip(res, 0.0, None).sum() / variance) if variance > 0 else 0.0

    @staticmethod
    def stored_numbers(n: int, r: int) -> int:
        """Complex modes (2 N r), eigenvalues and amplitudes (4 r)."""
        return 2 * n * r + 4 * r


def dmd_fit(h: np.ndarray, r: int) -> DMDFit:
    """Exact DMD of rank r from the uncentred ``(T, T)`` Gram ``h`` of the snapshots.

    Raises:
        ValueError: If r is not in 1..T-1.
    """
    t = len(h)
    if not 1 <= r <= t - 1:
        raise ValueError(f"DMD rank r={r} must be in 1..T-1={t - 1}")
    g1, cross = h[:-1, :-1], h[:-1, 1:]  # X1^T X1, X1^T X2
    eig, v = np.linalg.eigh(g1)
    order = np.argsort(eig)[::-1][:r]
    keep = eig[order] > eig.max() * 1e-12
    order = order[keep]
    s, v = np.sqrt(eig[order]), v[:, order]  # X1 = U S V^T
    a_tilde = (v / s).T @ cross @ (v / s)  # U^T X2 V S^-1 = S^-1 V^T X1^T X2 V S^-1
    lam, y = np.linalg.eig(a_tilde)
    coef = (v / s) @ y  # (T-1, r): Phi = X2 coef
    php = coef.conj().T @ h[1:, 1:] @ coef
    rhs = coef.conj().T @ h[1:, 0]  # Phi^H w_0
    beta = np.linalg.lstsq(php, rhs, rcond=None)[0]
    return DMDFit(lam=lam, coef=coef, beta=beta)


def ema_weights(w: np.ndarray, decay: float) -> np.ndarray:
    """``(N,)`` exponential moving average of the rows (``e <- decay e + (1 - decay) w_t``), float64."""
    e = np.asarray(w[0], dtype=np.float64).copy()
    for t in range(1, len(w)):
        e *= decay
        e += (1 - decay) * np.asarray(w[t], dtype=np.float64)
    return e


def swa_weights(w: np.ndarray, start_fraction: float) -> np.ndarray:
    """``(N,)`` uniform average of the rows from ``start_fraction`` of the trajectory to its end."""
    first = min(len(w) - 1, int(np.floor(start_fraction * (len(w) - 1))))
    acc = np.zeros(w.shape[1])
    for t in range(first, len(w)):
        acc += np.asarray(w[t], dtype=np.float64)
    return acc / (len(w) - first)


def heldout_errors(w: np.ndarray, fit: CMDFit, pca_first: PCAFit, dmd_first: DMDFit, split: int, d: int,
                   chunk: int = CHUNK) -> dict[str, float]:  # fmt: skip
    """Relative errors on rows ``split:`` of models fitted on rows ``:split`` (extrapolation).

    CMD keeps its modes, references, a and b and reads the references' new values (M numbers
    per new snapshot); PCA keeps the first window's mean and top-d directions and projects each
    new snapshot on them (d numbers per snapshot); DMD forecasts from its fit alone. Errors are
    relative to the held-out rows' variance around their own temporal mean.

    Args:
        w: ``(T, N)`` trajectory.
        fit: CMD fitted on rows ``:split``.
        pca_first: PCA of rows ``:split``.
        dmd_first: DMD of rows ``:split``.
        split: First held-out row.
        d: PCA rank.
        chunk: Parameters per pass.
    """
    t, n = w.shape
    late = w[split:]
    u = pca_first.u[:, :d]
    s = np.sqrt(np.clip(pca_first.eig[:d], 1e-300, None))
    coef = np.zeros((t - split, d))
    for lo in range(0, n, chunk):  # first pass: PCA coefficients of the new snapshots
        hi = min(n, lo + chunk)
        v = (np.asarray(w[:split, lo:hi], dtype=np.float64) - pca_first.mean[lo:hi]).T @ (u / s)  # (c, d)
        coef += (np.asarray(late[:, lo:hi], dtype=np.float64) - pca_first.mean[lo:hi]) @ v
    temporal = dmd_first.temporal(t)[split:]  # (T - split, r) forecasts
    num = {"cmd": 0.0, "pca": 0.0, "dmd": 0.0}
    den = 0.0
    ref_late = np.asarray(late[:, fit.refs], dtype=np.float64)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        x = np.asarray(late[:, lo:hi], dtype=np.float64)
        den += float(((x - x.mean(0)) ** 2).sum())
        lab = fit.labels[lo:hi]
        num["cmd"] += float(((x - (fit.a[lo:hi] * ref_late[:, lab] + fit.b[lo:hi])) ** 2).sum())
        v = (np.asarray(w[:split, lo:hi], dtype=np.float64) - pca_first.mean[lo:hi]).T @ (u / s)
        num["pca"] += float(((x - pca_first.mean[lo:hi] - coef @ v.T) ** 2).sum())
        phi = np.asarray(w[1:split, lo:hi], dtype=np.float64).T @ dmd_first.coef  # (c, r)
        num["dmd"] += float(((x - (temporal @ phi.T).real) ** 2).sum())
    return {k: (v / den if den > 0 else 0.0) for k, v in num.items()}
