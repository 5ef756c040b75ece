"""Training callback that tracks the top eigenvalues of curvature operators on the fixed batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from traindyn.spectra.flat import LinearOperator
from traindyn.spectra.lanczos import LanczosResult, LanczosWorkspace, lanczos
from traindyn.spectra.ntk import Kernel, ntk_operator
from traindyn.spectra.operators import (
    gauss_newton_operator,
    hessian_operator,
    hutchinson_trace,
    preconditioned_hessian_operator,
)
from traindyn.train.callbacks import Callback, TrainState

__all__ = ["MEASURES", "SpectraCallback", "start_vectors"]

MEASURES = ("hessian", "gn", "ntk", "preconditioned", "trace")


def start_vectors(result: LanczosResult) -> torch.Tensor:
    """What a measurement keeps for the next one's start: its top-k and guard Ritz vectors.

    ``(k + 1, P)`` unit rows (``(k, P)`` when the basis had no guard pair), which the next
    ``lanczos`` call takes as ``v0`` and starts from their sum. For a verified answer (the
    default, see ``traindyn.spectra.lanczos.lanczos``) they are the top k+1 Ritz vectors of
    the union of the warm run and the verification run.

    Equal weights, so when the top two eigenvalues swap between measurements (the old top
    vector now the second eigenvector) the new top one is still in the start. No start is
    safe on its own: ``benchmarks/spectra_accuracy.py`` compares every top eigenvalue the
    scaling study writes with a float64 reference at the same weights, and with this start
    and the single run's stop 2 of 918 Hessian measurements missed 1e-3 (by 0.18% and
    0.65%, pairs 1.6% and 0.65% apart), 6 of 828 Gauss-Newton ones (by 0.1-7.4%; three
    returned lambda_2), 0 of 828 NTK ones; ARPACK (ncv 8, tol 1e-2, warm) on the same
    Hessian states missed 1 (by 5.3%) with 1.21x the products. Other starts along the same
    1,026 Hessian states (a scratch chain of this callback's Lanczos calls against those
    references): from random vectors 5 misses and 37% more products; the top vector alone
    4 (up to 12%); the top three vectors summed 11; with a random vector added at half
    weight 3. A stricter stop did not reliably help either (a guard at 3x or 1x the
    accuracy, a floor of 6-8 products, Kato-Temple only beyond 10 residuals of Ritz gap).
    The misses are close pairs (0.6-7.5% apart) where the start holds little of the new top
    vector, and 3-8 products find the second eigenvalue with a small residual: what the
    verification run, from a random start on the operator deflated by the answer, finds.
    """
    return result.ritz_vectors


class SpectraCallback(Callback):
    """Top-k eigenvalues of the Hessian, Gauss-Newton, NTK and Adam-preconditioned Hessian.

    Every ``every`` steps (and at step 0, in ``on_train_start``) each measure is
    taken on ``state.fixed_batch`` by Lanczos to a relative eigenvalue accuracy ``tol``,
    warm-started from the sum of the previous top-k Ritz vectors and the guard pair's
    (``start_vectors``; kept in ``state_dict``, so a resumed run measures the same), and
    verified by a second run from a random start on the operator deflated by the answer
    (``traindyn.spectra.lanczos.lanczos``): the same rule for every measure, so a top
    eigenvector that the warm start does not hold is found (with probability at least
    1 - ``VERIFY_RISK`` per measurement) instead of reported as lambda_2. ``n_matvec`` counts
    both runs.
    Each eigenvalue becomes a row of table ``"spectra"``: step, measure, rank (0 =
    largest), eigenvalue, n_matvec, converged, lr (eta) and
    ``sharpness_base_lr_units = eigenvalue * eta / eta0`` (eta0 = ``state.base_lr``).
    Measure ``"trace"`` writes the Hutchinson estimate of tr(H) to table
    ``"hessian_trace"`` (columns trace, stderr, n_matvec). ``"preconditioned"``
    needs Adam/AdamW and starts after its first step. A non-finite product (a
    diverged model) gives a NaN row with converged False instead of an error.
    """

    def __init__(
        self,
        every: int,
        measures: Sequence[str] = ("hessian",),
        k: int = 1,
        n_ntk: int = 64,
        *,
        ntk_kernel: Kernel = "class_sum",
        tol: float = 1e-4,
        max_iter: int = 100,
        n_trace_probes: int = 20,
        lr_source: Literal["optimizer", "schedule"] = "optimizer",
        eval_mode: bool = True,
        seed: int = 0,
    ) -> None:
        """Configure what to measure and how often.

        Args:
            every: Measure every this many optimizer steps.
            measures: Any of ``"hessian"``, ``"gn"`` (Gauss-Newton), ``"ntk"``,
                ``"preconditioned"`` (P^-1/2 H P^-1/2 with Adam's P) and ``"trace"``.
            k: Eigenvalues per measure.
            n_ntk: Samples of the fixed batch (its first ones) for the NTK.
            ntk_kernel: ``"class_sum"`` (n x n, summed over outputs) or ``"full"``
                (see ``ntk_operator``).
            tol: Relative accuracy of each eigenvalue (Lanczos' eigenvalue stop and its
                verification; the figures need 1e-3).
            max_iter: Most Lanczos products per run (the warm run and the verification
                run each; a verification that finds more than the answer repeats both, at
                most ``traindyn.spectra.lanczos._ROUNDS`` times).
            n_trace_probes: Rademacher probes for ``"trace"``.
            lr_source: eta in base-LR units: ``"optimizer"`` takes the largest
                current LR of the optimizer's param groups (so muP's eta0 * N / N0
                for SGD is included); ``"schedule"`` takes ``base_lr * lr_factor``.
            eval_mode: Measure in eval mode (deterministic operators).
            seed: Seed of Lanczos' random start vectors, the verification's included
                (combined with the step).

        Raises:
            ValueError: On any invalid argument (all problems listed together).
        """
        problems = []
        if every < 1:
            problems.append(f"every must be >= 1, got {every}")
        unknown = [m for m in measures if m not in MEASURES]
        if unknown or not measures:
            problems.append(f"measures must be a non-empty subset of {MEASURES}, got {list(measures)}")
        if k < 1:
            problems.append(f"k must be >= 1, got {k}")
        if n_ntk < 1:
            problems.append(f"n_ntk must be >= 1, got {n_ntk}")
        if ntk_kernel not in ("class_sum", "full"):
            problems.append(f"ntk_kernel must be 'class_sum' or 'full', got {ntk_kernel!r}")
        if lr_source not in ("optimizer", "schedule"):
            problems.append(f"lr_source must be 'optimizer' or 'schedule', got {lr_source!r}")
        if tol <= 0 or max_iter < 1 or n_trace_probes < 1:
            problems.append("tol, max_iter and n_trace_probes must be positive")
        if problems:
            raise ValueError("SpectraCallback: " + "; ".join(problems))
        self.every = every
        self.measures = list(dict.fromkeys(measures))
        self.k = k
        self.n_ntk = n_ntk
        self.ntk_kernel = ntk_kernel
        self.tol = tol
        self.max_iter = max_iter
        self.n_trace_probes = n_trace_probes
        self.lr_source = lr_source
        self.eval_mode = eval_mode
        self.seed = seed
        self._eigenvectors: dict[str, torch.Tensor] = {}
        self._last_step: int | None = None
        # One Krylov basis per measure, kept between measurements (no page faults after
        # the first; see LanczosWorkspace).
        self._workspaces: dict[str, LanczosWorkspace] = {}

    def on_train_start(self, state: TrainState) -> None:
        """Check the run fits the measures, then measure at the current step if due."""
        problems = []
        if "preconditioned" in self.measures and not isinstance(
            state.optimizer, torch.optim.Adam | torch.optim.AdamW
        ):
            problems.append(
                f"measure 'preconditioned' needs Adam or AdamW, got {type(state.optimizer).__name__}"
            )
        if "ntk" in self.measures and self.n_ntk > state.fixed_batch[0].shape[0]:
            problems.append(
                f"n_ntk={self.n_ntk} exceeds the fixed batch size {state.fixed_batch[0].shape[0]}"
            )
        if problems:
            raise ValueError("SpectraCallback: " + "; ".join(problems))
        self._maybe_measure(state)

    def on_step_end(self, state: TrainState, loss: float) -> None:
        """Measure if ``state.step`` is a multiple of ``every``."""
        self._maybe_measure(state)

    def on_train_end(self, state: TrainState) -> None:
        """Free the kept Krylov bases."""
        for workspace in self._workspaces.values():
            workspace.release()

    def state_dict(self) -> dict[str, Any]:
        """Return the last eigenvectors (warm starts) and the last measured step."""
        return {
            "eigenvectors": {m: v.clone() for m, v in self._eigenvectors.items()},
            "last_step": self._last_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self._eigenvectors = {m: v.clone() for m, v in state["eigenvectors"].items()}
        self._last_step = state["last_step"]

    def _maybe_measure(self, state: TrainState) -> None:
        if state.step % self.every or state.step == self._last_step or state.diverged_at is not None:
            return
        self._last_step = state.step
        model, (x, y) = state.model, state.fixed_batch
        eta = self._eta(state)
        hessian = None
        for measure in self.measures:
            try:
                if measure in ("hessian", "preconditioned", "trace") and hessian is None:
                    hessian = hessian_operator(model, state.loss_fn, (x, y), eval_mode=self.eval_mode)
                if measure == "trace":
                    gen = self._generator(state, measure)
                    trace, stderr = hutchinson_trace(hessian, n_probes=self.n_trace_probes, generator=gen)
                    state.record("hessian_trace", trace=trace, stderr=stderr, n_matvec=self.n_trace_probes)
                    continue
                op = self._operator(measure, state, hessian)
            except FloatingPointError:
                self._record_nan(state, measure, eta)
                continue
            if op is None:
                continue
            self._run_lanczos(measure, op, state, eta)

    def _operator(
        self, measure: str, state: TrainState, hessian: LinearOperator | None
    ) -> LinearOperator | None:
        model, (x, y) = state.model, state.fixed_batch
        if measure == "hessian":
            return hessian
        if measure == "gn":
            return gauss_newton_operator(model, state.loss_fn, (x, y), eval_mode=self.eval_mode)
        if measure == "ntk":
            return ntk_operator(model, x[: self.n_ntk], kernel=self.ntk_kernel, eval_mode=self.eval_mode)
        if not state.optimizer.state:  # Adam has no second moments before its first step
            return None
        return preconditioned_hessian_operator(
            model, state.loss_fn, (x, y), state.optimizer, hessian=hessian
        )

    def _run_lanczos(self, measure: str, op: LinearOperator, state: TrainState, eta: float) -> None:
        k = min(self.k, op.dim)
        previous = self._eigenvectors.get(measure)
        v0 = None
        if previous is not None and previous.shape[1] == op.dim:
            v0 = previous.to(op.device)  # lanczos starts from the rows' sum
        try:
            result = lanczos(
                op, k=k, v0=v0, tol=self.tol, max_iter=self.max_iter,
                generator=self._generator(state, measure),
                workspace=self._workspaces.setdefault(measure, LanczosWorkspace()),
            )
        except FloatingPointError:
            self._record_nan(state, measure, eta)
            return
        self._eigenvectors[measure] = start_vectors(result).detach().cpu()  # (k + 1, P)
        for rank, value in enumerate(result.eigenvalues.tolist()):
            state.record(
                "spectra",
                measure=measure,
                rank=rank,
                eigenvalue=value,
                n_matvec=result.n_matvec,
                converged=result.converged,
                lr=eta,
                sharpness_base_lr_units=value * eta / state.base_lr,
            )

    def _record_nan(self, state: TrainState, measure: str, eta: float) -> None:
        if measure == "trace":
            state.record("hessian_trace", trace=float("nan"), stderr=float("nan"), n_matvec=0)
            return
        for rank in range(self.k):
            state.record(
                "spectra", measure=measure, rank=rank, eigenvalue=float("nan"), n_matvec=0,
                converged=False, lr=eta, sharpness_base_lr_units=float("nan"),
            )

    def _eta(self, state: TrainState) -> float:
        if self.lr_source == "schedule":
            return state.base_lr * state.lr_factor
        return max(float(g["lr"]) for g in state.optimizer.param_groups)

    def _generator(self, state: TrainState, measure: str) -> torch.Generator:
        # Seeded by (seed, step, measure): a resumed run draws the same vectors.
        return torch.Generator().manual_seed(
            self.seed * 1_000_003 + state.step * len(MEASURES) + MEASURES.index(measure)
        )
