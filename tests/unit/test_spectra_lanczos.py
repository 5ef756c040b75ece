"""Lanczos against dense eigendecompositions."""

import sys

import pytest
import torch

from traindyn.spectra import LinearOperator, lanczos
from traindyn.spectra.lanczos import eigenvalue_errors

torch.set_num_threads(1)


def symmetric(eigenvalues, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return (q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T).to(dtype)


def test_top_k_matches_eigh():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(120, 120, generator=gen, dtype=torch.float64)
    a = a + a.T
    res = lanczos(lambda v: a @ v, dim=120, k=4, tol=1e-10, vector_tol=1e-10, max_iter=120)
    ref = torch.linalg.eigvalsh(a).flip(0)[:4]
    assert res.converged
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-9, atol=0)
    # Ritz vectors are eigenvectors: A y = theta y.
    resid = res.eigenvectors @ a - res.eigenvalues[:, None] * res.eigenvectors
    assert resid.norm(dim=1).max() <= 1e-8 * ref.abs().max()
    assert res.eigenvectors.shape == (4, 120) and res.eigenvectors.dtype == torch.float64


def test_returns_algebraically_largest_not_largest_magnitude():
    spectrum = [-10.0, 3.0, 2.0, 1.0] + [0.5 - 0.01 * i for i in range(46)]
    a = symmetric(spectrum)
    res = lanczos(lambda v: a @ v, dim=50, k=2, tol=1e-10)
    torch.testing.assert_close(res.eigenvalues, torch.tensor([3.0, 2.0], dtype=torch.float64))
    # Power iteration on the same operator converges to the negative eigenvalue.
    v = torch.ones(50, dtype=torch.float64)
    for _ in range(200):
        v = a @ v
        v = v / v.norm()
    assert float(v @ a @ v) == pytest.approx(-10.0, rel=1e-6)


def test_float32_matvec_accumulates_in_float64():
    a = symmetric([5.0, 4.9, 4.8] + [1.0 - 0.01 * i for i in range(97)], dtype=torch.float32)
    op = LinearOperator(lambda v: a @ v, dim=100, dtype=torch.float32, device=torch.device("cpu"))
    seen = []
    res = lanczos(op, k=3, tol=1e-6, callback=lambda m, theta: seen.append(theta.dtype))
    assert res.eigenvalues.dtype == torch.float64 and set(seen) == {torch.float64}
    ref = torch.linalg.eigvalsh(a.double()).flip(0)[:3]
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-6, atol=0)


def test_warm_start_reduces_matvecs():
    # The Krylov run itself (verify=False); the verification's own cost is tested below.
    a = symmetric([10.0, 9.5, 9.0] + [8.0 * (1 - i / 200) for i in range(197)], seed=3)
    cold = lanczos(lambda v: a @ v, dim=200, tol=1e-8, max_iter=200, verify=False)
    # The recommended warm start: the top Ritz vector plus the guard pair's.
    v0 = cold.eigenvectors[0] + cold.next_eigenvector
    warm = lanczos(lambda v: a @ v, dim=200, tol=1e-8, max_iter=200, v0=v0, verify=False)
    # Passed whole, the Ritz vectors start from their sum: the same run.
    assert torch.equal(cold.ritz_vectors, torch.stack([cold.eigenvectors[0], cold.next_eigenvector]))
    rows = lanczos(lambda v: a @ v, dim=200, tol=1e-8, max_iter=200, v0=cold.ritz_vectors, verify=False)
    assert rows.n_matvec == warm.n_matvec
    torch.testing.assert_close(rows.eigenvalues, warm.eigenvalues, rtol=1e-12, atol=0)
    assert cold.converged and warm.converged
    assert warm.n_matvec < cold.n_matvec / 3
    # tol is the requested relative eigenvalue accuracy.
    assert float(warm.eigenvalues[0]) == pytest.approx(10.0, rel=1e-8)


def test_invariant_subspace_restarts():
    # The start vector lies in the span of two eigenvectors: the Krylov space is
    # invariant after two products, yet k = 3 needs a third direction.
    a = symmetric([4.0, 3.0, 2.0, 1.0, 0.0, -1.0])
    evecs = torch.linalg.eigh(a).eigenvectors
    v0 = evecs[:, 0] + evecs[:, 1]  # eigenvalues -1 and 0
    res = lanczos(lambda v: a @ v, dim=6, k=3, v0=v0, tol=1e-10)
    torch.testing.assert_close(res.eigenvalues, torch.tensor([4.0, 3.0, 2.0], dtype=torch.float64))


def test_seeded_and_checks_arguments():
    a = symmetric([float(i) for i in range(30)])
    r1 = lanczos(lambda v: a @ v, dim=30, generator=torch.Generator().manual_seed(5))
    r2 = lanczos(lambda v: a @ v, dim=30, generator=torch.Generator().manual_seed(5))
    assert r1.n_matvec == r2.n_matvec and torch.equal(r1.eigenvalues, r2.eigenvalues)
    with pytest.raises(ValueError, match="dim is required"):
        lanczos(lambda v: a @ v)
    with pytest.raises(ValueError, match="k must be"):
        lanczos(lambda v: a @ v, dim=30, k=31)
    with pytest.raises(ValueError, match="v0 must have shape"):
        lanczos(lambda v: a @ v, dim=30, v0=torch.ones(29))
    for bad in (torch.ones(2, 29), torch.ones(0, 30), torch.ones(1, 1, 30)):
        with pytest.raises(ValueError, match=r"v0 must have shape \(30,\) or \(n, 30\)"):
            lanczos(lambda v: a @ v, dim=30, v0=bad)
    with pytest.raises(FloatingPointError):
        lanczos(lambda v: v * float("nan"), dim=30)
    with pytest.raises(ValueError, match="needs vector_tol"):
        lanczos(lambda v: a @ v, dim=30, tol=None)


def test_no_ghost_copies_after_convergence():
    # A dominant eigenvalue converges in a few steps; without full reorthogonalization
    # later steps would produce spurious copies of it among the top k.
    spectrum = [100.0, 10.0, 9.9] + [1.0 * i / 297 for i in range(297)]
    a = symmetric(spectrum, seed=4)
    res = lanczos(lambda v: a @ v, dim=300, k=3, tol=0.0, max_iter=150)
    torch.testing.assert_close(res.eigenvalues, torch.tensor(spectrum[:3], dtype=torch.float64))
    gram = res.eigenvectors @ res.eigenvectors.T
    torch.testing.assert_close(gram, torch.eye(3, dtype=torch.float64), atol=1e-10, rtol=0)


def close_pair_operator(n=600, seed=0):
    """lambda_1 = 1 and lambda_2 = 0.964 (3.6% apart, as the Hessian at muP init), a few
    outliers and a bulk below 0.3, in a Householder-rotated basis."""
    gen = torch.Generator().manual_seed(seed)
    top = torch.tensor([1.0, 0.964, 0.8, 0.7, 0.62, 0.55], dtype=torch.float64)
    d = torch.cat([top, 0.3 * torch.rand(n - 6, generator=gen, dtype=torch.float64)])
    u = torch.randn(n, generator=gen, dtype=torch.float64)
    h = torch.eye(n, dtype=torch.float64) - 2 * torch.outer(u, u) / (u @ u)
    a = h @ torch.diag(d) @ h
    noise = torch.randn(n, generator=gen, dtype=torch.float64)
    return a, h[:, 0], h[:, 1], noise / noise.norm()


@pytest.mark.parametrize("overlap", [1e-2, 1e-3, 0.0])
def test_close_top_pair_from_a_start_nearly_orthogonal_to_the_top_vector(overlap):
    a, v1, v2, noise = close_pair_operator()
    ref = torch.linalg.eigvalsh(a).flip(0)
    assert float((ref[0] - ref[1]) / ref[0]) == pytest.approx(0.036, abs=1e-9)
    v0 = v2 + overlap * v1 + 0.1 * noise  # almost the second eigenvector
    res = lanczos(lambda v: a @ v, dim=600, v0=v0, tol=1e-3, max_iter=100)
    assert res.converged
    assert abs(float(res.eigenvalues[0]) - float(ref[0])) <= 1e-3 * float(ref[0])
    # A residual test alone (the old stop, and ARPACK's) accepts the second eigenvalue.
    naive = lanczos(lambda v: a @ v, dim=600, v0=v0, tol=1e9, vector_tol=1e-3, max_iter=100, verify=False)
    assert abs(float(naive.eigenvalues[0]) - float(ref[1])) <= 1e-3 * float(ref[1])


def test_eigenvalue_stop_meets_the_accuracy_with_fewer_products_than_a_residual_stop():
    a, _, _, _ = close_pair_operator(seed=1)
    ref = float(torch.linalg.eigvalsh(a)[-1])
    for tol in (1e-2, 1e-3, 1e-5):  # the stops compared as such (verify=False)
        res = lanczos(lambda v: a @ v, dim=600, tol=tol, max_iter=200, verify=False)
        by_residual = lanczos(lambda v: a @ v, dim=600, tol=1e9, vector_tol=tol, max_iter=200, verify=False)
        assert res.converged and abs(float(res.eigenvalues[0]) - ref) <= tol * ref
        assert float(res.errors[0]) <= tol * float(res.eigenvalues[0])
        assert res.n_matvec <= by_residual.n_matvec
        assert res.next_eigenvalue is not None and res.next_eigenvector.shape == (600,)


def test_residual_stop_alone_is_arpacks_rule():
    # tol=None: no eigenvalue test, no guard pair; stops at the first product whose top
    # residual is within vector_tol (as eigsh does), so a looser tol stops no later.
    a, _, _, _ = close_pair_operator(seed=2)
    ref = torch.linalg.eigvalsh(a).flip(0)
    seen = []
    res = lanczos(lambda v: a @ v, dim=600, tol=None, vector_tol=1e-3, max_iter=200,
                  callback=lambda m, theta: seen.append(m))
    assert res.converged and float(res.residuals[0]) <= 1e-3 * float(res.eigenvalues[0])
    assert seen == list(range(1, res.n_matvec + 1))
    # One product fewer would not have met the residual test.
    shorter = lanczos(lambda v: a @ v, dim=600, tol=0.0, max_iter=res.n_matvec - 1)
    assert float(shorter.residuals[0]) > 1e-3 * float(shorter.eigenvalues[0])
    # The residual bounds the eigenvalue error (and its square over the gap, more tightly).
    assert abs(float(res.eigenvalues[0]) - float(ref[0])) <= float(res.residuals[0])
    loose = lanczos(lambda v: a @ v, dim=600, tol=None, vector_tol=1e-2, max_iter=200)
    assert loose.n_matvec <= res.n_matvec


def test_eigenvalue_errors_by_hand():
    theta = torch.tensor([10.0, 8.0, 5.0], dtype=torch.float64)
    # Pair 0: gap 10 - 8 - r1 = 1.5 > r0 = 0.1 -> 0.01 / 1.5. Pair 1: neighbours give
    # min(8 - 5 - 0.2, 10 - 0.1 - 8) = 1.9 > r1 = 0.5 -> 0.25 / 1.9.
    errors = eigenvalue_errors(theta, torch.tensor([0.1, 0.5, 0.2], dtype=torch.float64), 2)
    torch.testing.assert_close(errors, torch.tensor([0.01 / 1.5, 0.25 / 1.9], dtype=torch.float64))
    # An unconverged neighbour (residual wider than the gap) leaves the plain residual.
    errors = eigenvalue_errors(theta, torch.tensor([0.1, 3.0, 0.2], dtype=torch.float64), 1)
    torch.testing.assert_close(errors, torch.tensor([0.1], dtype=torch.float64))
    # No neighbour at all: the residual.
    errors = eigenvalue_errors(theta[:1], torch.tensor([0.1], dtype=torch.float64), 1)
    torch.testing.assert_close(errors, torch.tensor([0.1], dtype=torch.float64))


def test_float32_operator_gets_float32_basis_rows_and_k_equal_dim_converges():
    a = symmetric([3.0, 2.0, 1.0, 0.5], dtype=torch.float32)
    seen = []

    def matvec(v):
        seen.append(v.dtype)
        return a @ v

    op = LinearOperator(matvec, dim=4, dtype=torch.float32, device=torch.device("cpu"))
    res = lanczos(op, k=4, tol=1e-6)
    assert set(seen) == {torch.float32} and res.converged and res.next_eigenvalue is None
    torch.testing.assert_close(res.eigenvalues, torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64),
                               rtol=1e-5, atol=1e-6)
    # Ritz vectors stay in the basis dtype, unit rows, eigenvectors of a to float32 accuracy.
    y = res.eigenvectors
    assert y.dtype == torch.float32 and y.shape == (4, 4)
    torch.testing.assert_close(y.double().norm(dim=1), torch.ones(4, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(y @ a, res.eigenvalues.float()[:, None] * y, rtol=0, atol=1e-5)


def test_partial_reorthogonalization_in_float32_keeps_the_basis_semi_orthogonal():
    # A float32 operator run far past convergence: the omega recurrence must call the
    # pass over the basis before overlaps reach sqrt(eps), and skip it on most steps.
    n, m = 2000, 120
    gen = torch.Generator().manual_seed(3)
    spectrum = torch.cat([torch.tensor([10.0, 9.0, 8.5]), torch.rand(n - 3, generator=gen) * 4.0])
    a = symmetric(spectrum.tolist(), seed=3, dtype=torch.float32)
    rows = []

    def matvec(v):
        rows.append(v.clone())
        return a @ v

    op = LinearOperator(matvec, dim=n, dtype=torch.float32, device=torch.device("cpu"))
    res = lanczos(op, k=3, tol=0.0, max_iter=m)
    # The product's inputs are the basis rows: multiples of q_i (lanczos keeps row scales).
    basis = torch.stack(rows).double()
    basis = basis / basis.norm(dim=1, keepdim=True)
    overlaps = (basis @ basis.T - torch.eye(m, dtype=torch.float64)).abs().max()
    assert float(overlaps) <= torch.finfo(torch.float32).eps ** 0.5
    # Far past convergence about every second step needs the pass; a run stopped at the
    # accuracy asked of it (here 10 products for tol 1e-3) needs none.
    assert 0 < res.n_reorth < 0.6 * m
    stopped = lanczos(lambda v: a @ v, dim=n, dtype=torch.float32, k=1, tol=1e-3)
    assert stopped.converged and stopped.n_reorth == 0
    # No ghost copies of the converged top eigenvalue, and float32-accurate values.
    torch.testing.assert_close(res.eigenvalues, torch.tensor([10.0, 9.0, 8.5], dtype=torch.float64),
                               rtol=2e-6, atol=0)
    # The plain three-term recurrence on the same operator loses orthogonality: without
    # the passes the estimates call for, the basis would not stay semi-orthogonal.
    q_prev, q, beta = torch.zeros(n), rows[0].clone(), 0.0
    plain = [q]
    for _ in range(m - 1):
        w = a @ q - beta * q_prev
        w -= (q @ w) * q
        beta = float(w.square().sum().sqrt())
        q_prev, q = q, w / beta
        plain.append(q)
    plain = torch.stack(plain).double()
    assert float((plain @ plain.T - torch.eye(m, dtype=torch.float64)).abs().max()) > 0.1


def test_basis_rows_keep_their_scales_and_the_answer_does_not_depend_on_them(monkeypatch):
    # Rows are sigma_i q_i (no pass to scale each new row): the product sees them scaled, the
    # answer is the same at any operator scale (muP Hessians are ~1e-3, SP ones ~1e2), and
    # the same again when every row is scaled to unit norm (a limit of 1 on the scales).
    module = sys.modules[lanczos.__module__]  # the package exports the function under its name

    n = 500
    gen = torch.Generator().manual_seed(5)
    spectrum = torch.cat([torch.tensor([10.0, 9.0, 8.5]), torch.rand(n - 3, generator=gen) * 4.0 - 1.0])
    a = symmetric(spectrum.tolist(), seed=5, dtype=torch.float32)
    ref = torch.linalg.eigvalsh(a.double()).flip(0)[:2]

    def run(c):
        norms = []

        def matvec(v):
            norms.append(float(v.double().norm()))
            return (c * a) @ v

        res = lanczos(matvec, dim=n, dtype=torch.float32, k=2, tol=0.0, max_iter=80)
        torch.testing.assert_close(res.eigenvalues / c, ref, rtol=2e-7, atol=0)
        torch.testing.assert_close(res.eigenvectors.double().norm(dim=1), torch.ones(2, dtype=torch.float64),
                                   rtol=0, atol=1e-6)
        return res, torch.tensor(norms)

    for c in (1e-6, 1e6, 1.0):
        scaled, norms = run(c)
        assert scaled.n_reorth > 0  # the passes take the scales too
        assert norms.max() / norms.min() > 2  # rows really are not unit vectors
    monkeypatch.setattr(module, "_ROW_SCALE_LIMIT", 1.0)
    unit_rows, norms = run(1.0)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-6)
    torch.testing.assert_close(unit_rows.eigenvalues, scaled.eigenvalues, rtol=1e-7, atol=0)


def test_workspace_reuses_its_basis_and_gives_the_same_answer():
    from traindyn.spectra import LanczosWorkspace  # noqa: PLC0415

    a = symmetric([5.0, 4.0, 3.0, *[1.0 / i for i in range(1, 98)]], seed=4)
    fresh = lanczos(lambda v: a @ v, dim=100, k=2, tol=1e-10, max_iter=60)
    workspace = LanczosWorkspace()
    first = lanczos(lambda v: a @ v, dim=100, k=2, tol=1e-10, max_iter=60, workspace=workspace)
    kept = workspace.basis(60, 100, torch.float64, torch.device("cpu")).data_ptr()
    second = lanczos(lambda v: a @ v, dim=100, k=2, tol=1e-10, max_iter=40, workspace=workspace)
    assert workspace.basis(40, 100, torch.float64, torch.device("cpu")).data_ptr() == kept
    for res in (first, second):
        assert res.n_matvec == fresh.n_matvec
        torch.testing.assert_close(res.eigenvalues, fresh.eigenvalues, rtol=0, atol=0)
    assert workspace.basis(80, 100, torch.float64, torch.device("cpu")).shape == (80, 100)
    workspace.release()


def test_norm_is_accurate_in_float32_at_a_million_entries():
    from traindyn.spectra.lanczos import _norm  # noqa: PLC0415

    gen = torch.Generator().manual_seed(0)
    # A length that is not a multiple of the chunk, and entries over six orders of magnitude.
    for x in (torch.randn(1_000_003, generator=gen),
              torch.randn(668_672, generator=gen) * torch.logspace(-3, 3, 668_672)):
        ref = float(x.double().norm())
        assert abs(float(_norm(x)) / ref - 1) < 2e-8
    small = torch.randn(100, dtype=torch.float64, generator=gen)
    assert float(_norm(small)) == pytest.approx(float(small.norm()), rel=1e-15)


def test_row_dots_are_accurate_in_float32_at_a_million_entries():
    from traindyn.spectra.lanczos import _row_dots  # noqa: PLC0415

    gen = torch.Generator().manual_seed(0)
    # Rows of a larger matrix (a row stride, as basis rows have), a length that is not a
    # multiple of the chunk, positive entries (no cancellation to hide rounding): a float32
    # BLAS dot errs by ~1e-7 of ||row|| ||v|| here.
    m = torch.rand(4, 1_000_003, generator=gen)
    rows, v = m[1:3], m[3]
    ref = rows.double() @ v.double()
    scale = rows.double().norm(dim=1) * v.double().norm()
    got = _row_dots(rows, v)
    assert got.dtype == torch.float64 and got.shape == (2,)
    assert float(((got - ref).abs() / scale).max()) < 2e-8
    kept = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # the fallback: products and a sum
        torch.testing.assert_close(_row_dots(rows, v), ref, rtol=2e-6, atol=0)
    finally:
        torch.set_float32_matmul_precision(kept)


def test_several_start_rows_start_from_their_sum():
    a = symmetric([5.0, 4.0, 3.0] + [2.0 * (1 - i / 60) for i in range(57)], seed=4)
    rows = torch.randn(3, 60, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    from_rows = lanczos(lambda v: a @ v, dim=60, v0=rows, tol=1e-8, max_iter=60)
    from_sum = lanczos(lambda v: a @ v, dim=60, v0=rows.sum(0), tol=1e-8, max_iter=60)
    assert from_rows.n_matvec == from_sum.n_matvec
    torch.testing.assert_close(from_rows.eigenvalues, from_sum.eigenvalues, rtol=1e-12, atol=0)
    one = lanczos(lambda v: a @ v, dim=60, v0=rows[:1], tol=1e-8, max_iter=60)
    assert one.n_matvec == lanczos(lambda v: a @ v, dim=60, v0=rows[0], tol=1e-8, max_iter=60).n_matvec


def test_norm_falls_back_to_a_sum_when_matmuls_may_run_in_lower_precision():
    from traindyn.spectra.lanczos import _norm  # noqa: PLC0415

    x = torch.randn(300_000, generator=torch.Generator().manual_seed(2))
    ref = float(x.double().norm())
    kept = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert _norm(x).dtype == torch.float64  # the chunked dots, summed in float64
        torch.set_float32_matmul_precision("medium")
        fallback = _norm(x)
        assert fallback.dtype == torch.float32  # the cascaded sum, no matrix product
        assert abs(float(fallback) / ref - 1) < 2e-7
    finally:
        torch.set_float32_matmul_precision(kept)


# ----------------------------------------------------------------------------- verification


def rotated_operator(top, n=600, seed=0, bulk=(-0.05, 0.3), dtype=torch.float64):
    """A dense symmetric operator with eigenvalues ``top`` and a bulk uniform in ``bulk``, in a
    Householder-rotated basis; returns the matrix and the eigenvectors of ``top`` as rows."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = bulk
    d = torch.cat([torch.tensor(top, dtype=torch.float64),
                   lo + (hi - lo) * torch.rand(n - len(top), generator=gen, dtype=torch.float64)])
    u = torch.randn(n, generator=gen, dtype=torch.float64)
    h = torch.eye(n, dtype=torch.float64) - 2 * torch.outer(u, u) / (u @ u)
    return (h @ torch.diag(d) @ h).to(dtype), h[:, : len(top)].T.contiguous()


def hidden_start(vectors, weights, n, seed=1, noise=0.1):
    """``sum(weights[i] * vectors[i]) + noise``, with its component on ``vectors[0]`` (the top
    eigenvector) removed exactly: a warm start that holds none of lambda_1's eigenvector."""
    gen = torch.Generator().manual_seed(seed)
    v = sum(w * vec for w, vec in zip(weights, vectors, strict=True)) + noise * torch.randn(
        n, generator=gen, dtype=torch.float64) / n**0.5
    return v - (v @ vectors[0]) * vectors[0]


ADVERSARIAL = {
    # name: (top of the spectrum, weights of the start on those eigenvectors)
    "orthogonal start, pair 3.6% apart": ([1.0, 0.964, 0.8, 0.7, 0.62, 0.55], [0.0, 1.0, 0.3]),
    "pair 0.1% apart": ([1.0, 0.999, 0.8, 0.7, 0.6], [0.0, 1.0]),
    "pair 1% apart": ([1.0, 0.99, 0.8, 0.7, 0.6], [0.0, 1.0]),
    "pair 5% apart": ([1.0, 0.95, 0.8, 0.7, 0.6], [0.0, 1.0]),
    "cluster of three": ([1.0, 0.99, 0.98, 0.7, 0.6], [0.0, 1.0, 0.0]),
    "cluster of three, start on both lower": ([1.0, 0.99, 0.98, 0.7, 0.6], [0.0, 1.0, 1.0]),
    "large negative outlier": ([1.0, 0.97, 0.6, -5.0], [0.0, 1.0, 0.0, 0.5]),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(ADVERSARIAL))
def test_verification_finds_a_top_eigenvector_the_warm_start_does_not_hold(case, dtype):
    top, weights = ADVERSARIAL[case]
    n, tol = 600, 1e-4  # pairs down to 0.1% apart: lambda_2 itself misses 1e-4
    a, vecs = rotated_operator(top, n=n)
    v0 = hidden_start(list(vecs[: len(weights)]), weights, n)
    ref = torch.linalg.eigvalsh(a.double()).flip(0)
    assert float(ref[0]) == pytest.approx(1.0, abs=1e-12) and abs(float(v0 @ vecs[0])) < 1e-12
    a_op = a.to(dtype)
    op = LinearOperator(lambda v: a_op @ v, dim=n, dtype=dtype, device=torch.device("cpu"))
    for seed in range(3):
        res = lanczos(op, v0=v0.to(dtype), tol=tol, max_iter=100, generator=torch.Generator().manual_seed(seed))
        assert res.converged, (case, seed)
        assert abs(float(res.eigenvalues[0]) - float(ref[0])) <= tol * float(ref[0]), (case, seed)
        assert abs(float(res.eigenvectors[0].double() @ vecs[0])) > 0.99
    # The single run's stop alone returns an eigenvalue below lambda_1 from these starts.
    alone = lanczos(op, v0=v0.to(dtype), tol=tol, max_iter=100, verify=False)
    assert float(ref[0]) - float(alone.eigenvalues[0]) > tol * float(ref[0])


@pytest.mark.parametrize("k", [1, 2])
def test_verification_with_k_pairs_and_a_hidden_top(k):
    a, vecs = rotated_operator([1.0, 0.98, 0.96, 0.7, 0.6], seed=3)
    v0 = hidden_start(list(vecs[:3]), [0.0, 1.0, 1.0], 600)
    ref = torch.linalg.eigvalsh(a).flip(0)[:k]
    res = lanczos(lambda v: a @ v, dim=600, k=k, v0=v0, tol=1e-5, max_iter=100)
    assert res.converged and res.eigenvalues.shape == (k,) and res.ritz_vectors.shape == (k + 1, 600)
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-5, atol=0)


def test_verification_costs_few_products_on_a_well_separated_top():
    # lambda_2 half of lambda_1: the warm run is right and the verification only has to see
    # that nothing of the deflated spectrum reaches its floor.
    a, vecs = rotated_operator([1.0, 0.5, 0.45, 0.4], n=2000, seed=2)
    gen = torch.Generator().manual_seed(4)
    v0 = vecs[0] + 0.05 * torch.randn(2000, generator=gen, dtype=torch.float64) / 2000**0.5
    alone = lanczos(lambda v: a @ v, dim=2000, v0=v0, tol=1e-3, max_iter=100, verify=False)
    res = lanczos(lambda v: a @ v, dim=2000, v0=v0, tol=1e-3, max_iter=100)
    assert res.converged and float(res.eigenvalues[0]) == pytest.approx(1.0, rel=1e-3)
    assert res.n_matvec - alone.n_matvec <= 7  # 5 here


def test_union_residuals_are_the_ritz_vectors_residuals():
    # The union's Ritz pairs come from the two runs' Lanczos relations, with no product: their
    # residual norms must be those of the returned vectors.
    a, vecs = rotated_operator([1.0, 0.97, 0.8, 0.7], seed=5)
    v0 = hidden_start(list(vecs[:2]), [0.3, 1.0], 600)
    for dtype in (torch.float64, torch.float32):
        a_op = a.to(dtype)
        op = LinearOperator(lambda v, a_op=a_op: a_op @ v, dim=600, dtype=dtype, device=torch.device("cpu"))
        res = lanczos(op, k=1, v0=v0.to(dtype), tol=1e-3, max_iter=100)
        y = res.eigenvectors.double()
        explicit = (y @ a.double() - res.eigenvalues[:, None] * y).norm(dim=1)
        torch.testing.assert_close(res.residuals, explicit, rtol=1e-3, atol=1e-6)
        rq = ((y @ a.double()) * y).sum(1)
        torch.testing.assert_close(res.eigenvalues, rq, rtol=1e-6, atol=0)


def test_verify_needs_an_eigenvalue_tolerance_and_tol_zero_runs_to_max_iter():
    a = symmetric([float(i) for i in range(30)])
    with pytest.raises(ValueError, match="verify=True needs tol"):
        lanczos(lambda v: a @ v, dim=30, tol=None, vector_tol=1e-3, verify=True)
    fixed = lanczos(lambda v: a @ v, dim=30, tol=0.0, max_iter=12)
    assert fixed.n_matvec == 12 and not fixed.converged
