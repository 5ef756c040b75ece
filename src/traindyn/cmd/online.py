"""Online CMD: modes and references fixed after a warm-up, a_i and b_i by exact recursive least squares.

Per mode the least squares of ``w_i ~ a_i r + b_i`` has the 2 x 2 Gram matrix
``[[sum r^2, sum r], [sum r, n]]``; we keep it in centred form (count, mean and second
moment of each reference) and, per parameter, the running mean of w_i and its co-moment
with its reference. New snapshots, one or several at once, are merged by the exact
pairwise update (Chan et al. 1979), so the state after any sequence of updates equals the
batch fit on all snapshots seen. State: 2N floats + the M x T reference trajectories
(+ N labels), instead of the N x T trajectory.
"""

from __future__ import annotations

import numpy as np

from .fit import CMDFit

__all__ = ["OnlineCMD"]


class OnlineCMD:
    """Exact running least squares of every parameter on its (fixed) mode's reference.

    Args:
        labels: ``(N,)`` int64 mode of every parameter.
        refs: ``(M,)`` int64 index of each mode's reference.
    """

    def __init__(self, labels: np.ndarray, refs: np.ndarray):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.refs = np.asarray(refs, dtype=np.int64)
        n, m = len(self.labels), len(self.refs)
        self.count = 0
        self.mean_r, self.m2_r = np.zeros(m), np.zeros(m)
        self.mean_w, self.c_wr = np.zeros(n), np.zeros(n)  # the 2N floats per parameter
        self.ref_rows: list[np.ndarray] = []  # (M,) per snapshot: the M x T references

    @classmethod
    def from_fit(cls, fit: CMDFit, warmup: np.ndarray) -> OnlineCMD:
        """Start from a CMD fitted on the warm-up snapshots ``warmup`` (F, N), which are merged in."""
        online = cls(fit.labels, fit.refs)
        for lo in range(0, len(warmup), 8):  # merged in groups: float64 copies of 8 rows at a time
            online.update(warmup[lo : lo + 8])
        return online

    def update(self, x: np.ndarray) -> None:
        """Merge k new snapshots ``x`` ``(k, N)`` (or one ``(N,)``) into the fit."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        k = len(x)
        if k == 0:
            return
        r = x[:, self.refs]  # (k, M)
        mean_rb, mean_xb = r.mean(0), x.mean(0)
        dr = r - mean_rb
        m2_rb = (dr * dr).sum(0)
        c_b = ((x - mean_xb) * dr[:, self.labels]).sum(0)  # (N,)
        n_a, n = self.count, self.count + k
        delta_r, delta_x = mean_rb - self.mean_r, mean_xb - self.mean_w
        w_ab = n_a * k / n
        self.c_wr += c_b + w_ab * delta_x * delta_r[self.labels]
        self.m2_r += m2_rb + w_ab * delta_r * delta_r
        self.mean_w += delta_x * (k / n)
        self.mean_r += delta_r * (k / n)
        self.count = n
        self.ref_rows.extend(r)

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)`` float64 ``(N,)``: the least-squares fit on every snapshot merged so far."""
        var = self.m2_r[self.labels]
        a = np.divide(self.c_wr, var, out=np.zeros_like(self.c_wr), where=var > 0)
        return a, self.mean_w - a * self.mean_r[self.labels]

    @property
    def ref_traj(self) -> np.ndarray:
        """``(T, M)`` reference trajectories seen so far."""
        return np.asarray(self.ref_rows)

    def state_floats(self) -> int:
        """Floats this state holds (2N + M T + 2M), labels aside."""
        return self.mean_w.size + self.c_wr.size + len(self.ref_rows) * len(self.refs) + 2 * len(self.refs)

    def state_dict(self) -> dict:
        """What a checkpoint keeps."""
        return {"labels": self.labels, "refs": self.refs, "count": self.count, "mean_r": self.mean_r,
                "m2_r": self.m2_r, "mean_w": self.mean_w, "c_wr": self.c_wr, "ref_rows": self.ref_traj}  # fmt: skip

    @classmethod
    def from_state(cls, state: dict) -> OnlineCMD:
        """Inverse of ``state_dict``."""
        online = cls(state["labels"], state["refs"])
        online.count = int(state["count"])
        for key in ("mean_r", "m2_r", "mean_w", "c_wr"):
            setattr(online, key, np.array(state[key], dtype=np.float64))
        online.ref_rows = list(np.asarray(state["ref_rows"]))
        return online
