"""Post-hoc Correlation Mode Decomposition of a (T, N) trajectory (docs/methods.md, cmd study).

Every parameter follows one of M reference trajectories up to an affine map,
``w_i(t) ~ a_i * w_ref(m_i)(t) + b_i``. The modes come from complete-linkage clustering of
the |Pearson correlation| rows of K sampled parameters; every one of the N parameters is
then assigned to the reference it correlates with most, in column chunks, so that neither
an N x N nor an N x K matrix is ever formed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "CMDFit",
    "abs_corr",
    "assign_and_fit",
    "cluster_modes",
    "fit_cmd",
    "references",
    "sample_indices",
]

CHUNK = 32768  # parameters per pass: T x CHUNK float64 (26 MB at T = 100)


@dataclass
class CMDFit:
    """A fitted CMD: M reference parameters and an affine map of every parameter onto one.

    Attributes:
        labels: ``(N,)`` int64 mode of every parameter, modes numbered by size (0 = largest).
        refs: ``(M,)`` int64 index (into the N parameters) of each mode's reference.
        a: ``(N,)`` float64 slope on the reference.
        b: ``(N,)`` float64 offset.
        ref_traj: ``(T, M)`` float64 trajectories of the references over the fitted window.
        sample: ``(K,)`` int64 indices of the sampled parameters.
        sample_labels: ``(K,)`` int64 mode of each sampled parameter.
        corr: ``(K, K)`` float32 |correlation| of the sampled parameters (for the figure).
        requested_modes: The M asked for; ``len(refs)`` can be smaller when the clustering
            finds fewer distinct clusters (never silently: see ``n_modes``).
        start: First row of the trajectory the fit used.
    """

    labels: np.ndarray
    refs: np.ndarray
    a: np.ndarray
    b: np.ndarray
    ref_traj: np.ndarray
    sample: np.ndarray
    sample_labels: np.ndarray
    corr: np.ndarray
    requested_modes: int
    start: int = 0

    @property
    def n_modes(self) -> int:
        """Modes actually found (every one has a reference and at least that member)."""
        return len(self.refs)

    def weights_at(self, ref_values: np.ndarray) -> np.ndarray:
        """Reconstructed ``(N,)`` weights given the ``(M,)`` reference values at one time."""
        return self.a * np.asarray(ref_values, dtype=np.float64)[self.labels] + self.b

    def stored_numbers(self) -> int:
        """Numbers kept to rebuild the window: a, b and a label per parameter, plus M x T references."""
        return 3 * len(self.labels) + self.ref_traj.size


def sample_indices(offsets: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K parameter indices: half spread evenly over layers, half in proportion to layer size.

    Args:
        offsets: ``(P + 1,)`` start of each layer (parameter tensor) in the flat vector, then N.
        k: Samples wanted (all N when ``k >= N``).
        seed: Seed of the draw.

    Returns:
        Sorted unique int64 indices (int64: float32 indices are wrong past 2^24 parameters).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    n = int(offsets[-1])
    if k >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    sizes = np.diff(offsets)
    even = k // 2
    quota = np.full(len(sizes), even // len(sizes)) + (np.arange(len(sizes)) < even % len(sizes))
    chosen = [lo + rng.choice(size, min(q, size), replace=False)
              for lo, size, q in zip(offsets[:-1], sizes, quota, strict=True) if q]  # fmt: skip
    picked = np.unique(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)
    # The other half uniformly over all N: a layer's share is proportional to its size.
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), picked, assume_unique=True)
    extra = rng.choice(rest, k - len(picked), replace=False)
    return np.sort(np.concatenate([picked, extra])).astype(np.int64)


def abs_corr(x: np.ndarray) -> np.ndarray:
    """|Pearson correlation| between the columns of ``x`` (T, K); constant columns give 0, not NaN."""
    xc = np.asarray(x, dtype=np.float64)
    xc = xc - xc.mean(0)
    norm = np.linalg.norm(xc, axis=0)
    xn = np.divide(xc, norm, out=np.zeros_like(xc), where=norm > 0)
    return np.nan_to_num(np.abs(xn.T @ xn))


def cluster_modes(corr: np.ndarray, m: int) -> np.ndarray:
    """Complete-linkage clusters of the rows of ``corr`` (Euclidean), cut at M (maxclust).

    Returns:
        ``(K,)`` int64 labels 0..M'-1 numbered by cluster size (0 = largest), M' <= M.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    k = len(corr)
    if k < 2 or m < 2:
        return np.zeros(k, dtype=np.int64)
    c = np.asarray(corr, dtype=np.float64)
    sq = (c * c).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (c @ c.T)  # row distances by one matrix product
    np.fill_diagonal(d2, 0.0)
    d = np.sqrt(np.clip((d2 + d2.T) / 2, 0.0, None))
    raw = fcluster(linkage(squareform(d, checks=False), method="complete"), m, criterion="maxclust")
    ids, counts = np.unique(raw, return_counts=True)
    order = ids[np.lexsort((ids, -counts))]  # by size, ties by first cluster id
    relabel = np.empty(raw.max() + 1, dtype=np.int64)
    relabel[order] = np.arange(len(order))
    return relabel[raw]


def references(corr: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per mode, the position (in the sample) of the member with the highest mean |corr| to the rest."""
    refs = []
    for mode in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == mode)
        if len(members) == 0:
            raise ValueError(f"mode {mode} has no member: labels must be consecutive")
        if len(members) == 1:
            refs.append(members[0])
            continue
        block = corr[np.ix_(members, members)]
        score = (block.sum(1) - np.diag(block)) / (len(members) - 1)
        refs.append(members[int(np.argmax(score))])
    return np.asarray(refs, dtype=np.int64)


def assign_and_fit(w: np.ndarray, refs: np.ndarray, labels: np.ndarray | None = None, start: int = 0,
                   stop: int | None = None, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Assign every parameter to its most correlated reference and fit a_i, b_i (float64).

    a_i, b_i minimise ``sum_t (w_i(t) - a_i r(t) - b_i)^2`` over rows ``start:stop``: the least
    squares against ``[r; 1]``, solved in centred form (slope = covariance / variance).
    A constant reference gives a = 0, b = the parameter's mean.

    Args:
        w: ``(T, N)`` trajectory (a memory map is read chunk by chunk).
        refs: ``(M,)`` int64 reference indices.
        labels: Fixed ``(N,)`` modes; None assigns by the highest |corr| (references to themselves).
        start: First row of the window (indices stay those of the whole trajectory).
        stop: End row (exclusive; None = all).
        chunk: Parameters per pass.

    Returns:
        ``(labels, a, b)``: int64 ``(N,)``, float64 ``(N,)``, float64 ``(N,)``.
    """
    refs = np.asarray(refs, dtype=np.int64)
    n = w.shape[1]
    r = np.asarray(w[start:stop][:, refs], dtype=np.float64)  # (T, M)
    r_mean = r.mean(0)
    rc = r - r_mean
    r_var = (rc * rc).sum(0)
    r_norm = np.sqrt(r_var)
    out_labels = np.empty(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    a, b = np.empty(n), np.empty(n)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        x = np.asarray(w[start:stop, lo:hi], dtype=np.float64)  # (T, c)
        x_mean = x.mean(0)
        xc = x - x_mean
        cov = rc.T @ xc  # (M, c)
        if labels is None:
            x_norm = np.linalg.norm(xc, axis=0)
            denom = r_norm[:, None] * x_norm[None, :]
            corr = np.abs(np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0))
            out_labels[lo:hi] = np.argmax(corr, axis=0)
        lab = out_labels[lo:hi]
        var = r_var[lab]
        slope = np.divide(cov[lab, np.arange(hi - lo)], var, out=np.zeros(hi - lo), where=var > 0)
        a[lo:hi], b[lo:hi] = slope, x_mean - slope * r_mean[lab]
    if labels is None:
        # A reference is its own best fit, even where another reference ties with it.
        out_labels[refs] = np.arange(len(refs))
        a[refs], b[refs] = 1.0, 0.0
    return out_labels, a, b


def fit_cmd(w: np.ndarray, offsets: np.ndarray, k: int, m: int, seed: int = 0, start: int = 0,
            stop: int | None = None, chunk: int = CHUNK) -> CMDFit:  # fmt: skip
    """Fit CMD to rows ``start:stop`` of a trajectory.

    Args:
        w: ``(T, N)`` float32 trajectory (e.g. ``Trajectory.weights``).
        offsets: ``(P + 1,)`` layer offsets (``Trajectory.offsets``) for the sampling.
        k: Sampled parameters K.
        m: Modes M (maxclust).
        seed: Seed of the sampling.
        start: First row of the fitted window; parameter indices stay global.
        stop: End row (exclusive).
        chunk: Parameters per assignment pass.

    Raises:
        ValueError: If the window holds fewer than 2 rows.
    """
    rows = len(range(*slice(start, stop).indices(len(w))))
    if rows < 2:
        raise ValueError(f"CMD needs at least 2 snapshots in the window, got {rows} (start={start}, stop={stop})")
    sample = sample_indices(offsets, k, seed)
    corr = abs_corr(w[start:stop][:, sample])
    sample_labels = cluster_modes(corr, m)
    refs = sample[references(corr, sample_labels)]
    labels, a, b = assign_and_fit(w, refs, start=start, stop=stop, chunk=chunk)
    ref_traj = np.asarray(w[start:stop][:, refs], dtype=np.float64)
    return CMDFit(labels=labels, refs=refs, a=a, b=b, ref_traj=ref_traj, sample=sample,
                  sample_labels=sample_labels, corr=corr.astype(np.float32), requested_modes=m,
                  start=start)  # fmt: skip
