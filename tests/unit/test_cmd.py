"""CMD post-hoc fit, online RLS and baselines against planted modes and dense references."""

import tracemalloc

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from traindyn.cmd import (
    OnlineCMD,
    abs_corr,
    assign_and_fit,
    cluster_modes,
    cmd_error,
    dmd_fit,
    ema_weights,
    fit_cmd,
    gram,
    pca_fit,
    references,
    sample_indices,
    swa_weights,
    total_variance,
)


def planted(t=30, n=600, m=3, noise=0.0, seed=0):
    """A trajectory whose parameters are affine images of m random-walk references."""
    rng = np.random.default_rng(seed)
    refs = np.cumsum(rng.normal(size=(t, m)), axis=0)  # (T, M) independent walks
    labels = rng.integers(0, m, n)
    a = rng.choice([-1, 1], n) * rng.uniform(0.5, 2.0, n)
    b = rng.normal(size=n)
    w = a * refs[:, labels] + b + noise * rng.normal(size=(t, n))
    return w.astype(np.float32), labels, a, b


def same_partition(x, y):
    pairs = set(zip(x.tolist(), y.tolist(), strict=True))
    return len(pairs) == len(set(x.tolist())) == len(set(y.tolist()))


def test_planted_modes_are_recovered_exactly():
    w, labels, a, b = planted()
    fit = fit_cmd(w, np.array([0, 200, 600]), k=300, m=3, seed=1)
    assert fit.n_modes == 3 and same_partition(fit.labels, labels)
    # a_i is relative to the chosen reference: a_i / a_ref, b likewise.
    ref_a, ref_b = a[fit.refs][fit.labels], b[fit.refs][fit.labels]
    np.testing.assert_allclose(fit.a, a / ref_a, rtol=1e-4)
    np.testing.assert_allclose(fit.b, b - a / ref_a * ref_b, atol=1e-4)
    assert cmd_error(w, fit) < 1e-10
    # Modes are numbered by the size of their cluster in the sample.
    sizes = np.bincount(fit.sample_labels)
    assert (np.diff(sizes) <= 0).all()


def test_online_equals_posthoc_with_the_same_modes_one_at_a_time_and_several_at_once():
    w, *_ = planted(t=40, n=900, m=4, noise=0.3, seed=2)
    f = 6
    fit = fit_cmd(w[:f], np.array([0, 450, 900]), k=200, m=4, seed=0)
    _, a_post, b_post = assign_and_fit(w, fit.refs, labels=fit.labels)
    one = OnlineCMD.from_fit(fit, w[:f])
    for row in w[f:]:
        one.update(row)
    several = OnlineCMD.from_fit(fit, w[:f])
    for lo, hi in [(f, f + 1), (f + 1, f + 8), (f + 8, f + 11), (f + 11, 40)]:
        several.update(w[lo:hi])
    for online in (one, several):
        a_on, b_on = online.coefficients()
        assert np.abs(a_on - a_post).max() < 1e-8 and np.abs(b_on - b_post).max() < 1e-8
        np.testing.assert_array_equal(online.ref_traj, w[:, fit.refs].astype(np.float64))
        assert online.state_floats() == 2 * w.shape[1] + w.shape[0] * fit.n_modes + 2 * fit.n_modes
    # Post-hoc least squares against a dense solve of [r, 1] for a few parameters.
    for i in [0, 17, 899]:
        r = w[:, fit.refs[fit.labels[i]]].astype(np.float64)
        sol = np.linalg.lstsq(np.stack([r, np.ones_like(r)], 1), w[:, i].astype(np.float64), rcond=None)[0]
        np.testing.assert_allclose([a_post[i], b_post[i]], sol, atol=1e-10)
    # The reference code's fault: a multi-snapshot update that is not the batch fit.
    wrong = OnlineCMD.from_fit(fit, w[:f])
    wrong.update(w[f:].mean(0))  # one averaged snapshot is not several snapshots
    assert np.abs(wrong.coefficients()[0] - a_post).max() > 1e-3


def test_state_round_trips():
    w, *_ = planted(t=12, n=100, noise=0.1)
    fit = fit_cmd(w[:4], np.array([0, 100]), k=50, m=3)
    online = OnlineCMD.from_fit(fit, w[:4])
    again = OnlineCMD.from_state(online.state_dict())
    online.update(w[4:])
    again.update(w[4:])
    np.testing.assert_array_equal(online.coefficients()[0], again.coefficients()[0])


def test_the_large_correlation_matrix_is_never_formed():
    t, n, k = 16, 200_000, 500
    rng = np.random.default_rng(0)
    w = np.cumsum(rng.normal(size=(t, 8)), 0)[:, rng.integers(0, 8, n)].astype(np.float32)
    w += 0.01 * rng.normal(size=w.shape).astype(np.float32)
    tracemalloc.start()
    fit = fit_cmd(w, np.array([0, n // 2, n]), k=k, m=8, seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert fit.labels.shape == (n,)
    # An N x K float64 matrix alone would take 800 MB; the chunked passes stay far below.
    assert peak < 120e6, peak / 1e6


def test_indices_are_int64_and_exact_past_2_to_the_24():
    offsets = np.array([0, 2**24 - 3, 2**25 + 7], dtype=np.int64)
    idx = sample_indices(offsets, 4000, seed=0)
    assert idx.dtype == np.int64 and len(np.unique(idx)) == 4000 and idx.max() > 2**24
    # float32 indices (the reference code's) are wrong up there: odd indices round away.
    assert (idx.astype(np.float32).astype(np.int64) != idx).any()
    # Half of K spread evenly: each layer has at least K/4 samples although the first is half the size.
    per_layer = np.histogram(idx, offsets)[0]
    assert per_layer.min() >= 1000
    w, *_ = planted()
    fit = fit_cmd(w, np.array([0, 600]), k=100, m=3)
    assert fit.labels.dtype == fit.refs.dtype == fit.sample.dtype == np.int64


def test_constant_parameters_give_zero_correlation_and_no_nan():
    w, *_ = planted(n=300)
    w[:, :40] = 0.5  # dead parameters
    c = abs_corr(w[:, :60])
    assert np.isfinite(c).all() and (c[:40] == 0).all()
    fit = fit_cmd(w, np.array([0, 300]), k=300, m=4)
    assert np.isfinite(fit.a).all() and np.isfinite(fit.b).all()
    np.testing.assert_allclose(fit.weights_at(fit.ref_traj[5])[:40], 0.5, atol=1e-7)
    assert cmd_error(w, fit) < 1e-10


def test_complete_linkage_matches_scipy_on_the_rows_and_no_mode_is_skipped():
    w, *_ = planted(n=80, m=4, noise=0.5)
    c = abs_corr(w)
    ours = cluster_modes(c, 4)
    dense = fcluster(linkage(pdist(c), method="complete"), 4, criterion="maxclust")
    assert same_partition(ours, dense)
    # Only two distinct rows: maxclust finds 2 clusters for M = 4, numbered 0 and 1 -- not 4
    # labels with holes (the reference code then skipped a mode and misaligned the others).
    two = np.repeat(np.eye(2), [5, 3], axis=0)[:, [0] * 4 + [1] * 4]
    labels = cluster_modes(two, 4)
    assert sorted(set(labels.tolist())) == [0, 1] and np.bincount(labels).tolist() == [5, 3]
    assert len(references(two, labels)) == 2
    with pytest.raises(ValueError, match="mode 1 has no member"):
        references(two, np.where(labels == 1, 2, 0))
    w2 = np.repeat(planted(n=2, m=2)[0], [5, 3], axis=1)
    fit = fit_cmd(w2, np.array([0, 8]), k=8, m=4)
    assert fit.n_modes == 2 and fit.requested_modes == 4 and set(fit.labels.tolist()) == {0, 1}


def test_a_window_that_starts_later_indexes_the_whole_trajectory():
    w, *_ = planted(t=30, noise=0.2, seed=4)
    s = 11
    late = fit_cmd(w, np.array([0, 600]), k=200, m=3, seed=5, start=s)
    copy = fit_cmd(np.ascontiguousarray(w[s:]), np.array([0, 600]), k=200, m=3, seed=5)
    np.testing.assert_array_equal(late.labels, copy.labels)
    np.testing.assert_array_equal(late.refs, copy.refs)
    np.testing.assert_allclose(late.a, copy.a, atol=1e-12)
    np.testing.assert_array_equal(late.ref_traj, w[s:, late.refs].astype(np.float64))
    assert late.start == s and abs(cmd_error(w, late) - cmd_error(w[s:], copy)) < 1e-12


def test_pca_against_a_dense_svd_and_eckart_young():
    w, *_ = planted(t=12, n=50, m=3, noise=0.3)
    x = w.astype(np.float64)
    xc = x - x.mean(0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    pca = pca_fit(w, chunk=7)
    for d in [1, 2, 5]:
        dense = x.mean(0) + (u[:, :d] * s[:d]) @ vt[:d]
        np.testing.assert_allclose(pca.reconstruct(w, d, np.arange(50)), dense, atol=1e-9)
        assert abs(pca.error(d) - ((x - dense) ** 2).sum() / (xc**2).sum()) < 1e-12
        # On the fitted window PCA at rank M is never worse than CMD with M modes.
        assert pca.error(d) <= cmd_error(w, fit_cmd(w, np.array([0, 50]), k=50, m=d)) + 1e-12
    assert abs(total_variance(w, chunk=7) - (xc**2).sum()) < 1e-9


def test_exact_dmd_against_a_dense_computation():
    rng = np.random.default_rng(3)
    t, n, r = 9, 14, 3
    w = (np.cumsum(rng.normal(size=(t, n)), 0) + 5).astype(np.float32)
    x = w.astype(np.float64).T  # (N, T)
    x1, x2 = x[:, :-1], x[:, 1:]
    u, s, vh = np.linalg.svd(x1, full_matrices=False)
    u, s, v = u[:, :r], s[:r], vh[:r].T
    lam, y = np.linalg.eig(u.T @ x2 @ v / s)
    phi = x2 @ v / s @ y
    beta = np.linalg.lstsq(phi, x[:, 0], rcond=None)[0]
    dense = (phi @ (lam[:, None] ** np.arange(t) * beta[:, None])).real.T  # (T, N)
    h, _ = gram(w, centre=False, chunk=5)
    dmd = dmd_fit(h, r)
    np.testing.assert_allclose(np.sort_complex(dmd.lam), np.sort_complex(lam), atol=1e-9)
    np.testing.assert_allclose(dmd.reconstruct(w, np.arange(n)), dense, atol=1e-7)
    var = ((x.T - x.T.mean(0)) ** 2).sum()
    assert abs(dmd.error(h, var) - ((x.T - dense) ** 2).sum() / var) < 1e-8
    with pytest.raises(ValueError, match="DMD rank"):
        dmd_fit(h, t)


def test_ema_and_swa_against_loops():
    w = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    e = w[0].astype(np.float64)
    for row in w[1:]:
        e = 0.8 * e + 0.2 * row.astype(np.float64)
    np.testing.assert_allclose(ema_weights(w, 0.8), e, atol=1e-12)
    np.testing.assert_allclose(swa_weights(w, 0.5), w[4:].astype(np.float64).mean(0), atol=1e-12)


def test_heldout_errors_against_dense_extrapolations():
    from traindyn.cmd import heldout_errors

    w, *_ = planted(t=16, n=40, m=3, noise=0.2, seed=7)
    x = w.astype(np.float64)
    split, d = 8, 3
    fit = fit_cmd(w, np.array([0, 40]), k=40, m=3, stop=split)
    pca = pca_fit(w[:split])
    h, _ = gram(w, centre=False)
    dmd = dmd_fit(h[:split, :split], d)
    got = heldout_errors(w, fit, pca, dmd, split, d, chunk=7)
    late = x[split:]
    var = ((late - late.mean(0)) ** 2).sum()
    cmd_rec = fit.a * late[:, fit.refs][:, fit.labels] + fit.b
    first = x[:split] - x[:split].mean(0)
    v = np.linalg.svd(first, full_matrices=False)[2][:d].T  # (N, d)
    pca_rec = x[:split].mean(0) + (late - x[:split].mean(0)) @ v @ v.T
    phi = x[1:split].T @ dmd.coef
    dmd_rec = (dmd.temporal(16)[split:] @ phi.T).real
    for key, rec in (("cmd", cmd_rec), ("pca", pca_rec), ("dmd", dmd_rec)):
        assert abs(got[key] - ((late - rec) ** 2).sum() / var) < 1e-9, key
