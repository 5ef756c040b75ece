"""The cmd study's results page (``summary.md``, ``docs/results/cmd.md``) and headline."""

from __future__ import annotations

from typing import Any

from .common import ci, fmt, page_head, sign_of, table

__all__ = ["headline", "markdown"]

MODELS = {"mlp": "MLP", "convnet": "ConvNet", "gpt": "GPT"}
METHODS = {"sgd": "SGD end point", "ema": "EMA", "swa": "SWA", "cmd_posthoc": "CMD post-hoc",
           "cmd_online": "CMD online", "p_sgd": "P-SGD"}  # fmt: skip
PARAMS = {"sp": "SP", "ntk": "NTK", "mup": "μP"}


def _models(summary: dict[str, Any]) -> dict[str, Any]:
    """``by_model`` with the primary model first, then in the order of ``MODELS``."""
    by = summary.get("by_model", {})
    order = [summary.get("primary_model"), *MODELS, *by]
    return {k: by[k] for k in dict.fromkeys(order) if k in by}


def _count(v: Any) -> str:
    return "not reached" if v is None else f"{v:g}" if float(v).is_integer() else fmt(v, 2)


def _pp(entry: dict[str, Any] | None, scale: float, sign: bool = False) -> str:
    return ci(entry, 2, sign=sign, scale=scale)


def _scale(summary: dict[str, Any]) -> float:
    """Accuracies are stored as fractions: shown in percent."""
    means = [e.get("mean") for m in summary.get("by_model", {}).values() for e in m.get("test_accuracy", {}).values()
             if e and e.get("mean") is not None]  # fmt: skip
    return 100.0 if means and max(means) <= 1.0 else 1.0


def _errors(errors: dict[str, dict[str, float]]) -> list[str]:
    dims = sorted({int(d) for e in errors.values() for d in e})
    rows = [[m.upper(), *(fmt(errors[m].get(str(d)), 3) for d in dims)] for m in ("cmd", "pca", "dmd") if m in errors]
    return table(["M (= d = r)", *map(str, dims)], rows)


def _significant(sig: int | None) -> str:
    return {1: "better", -1: "worse", 0: "no significant difference"}.get(sig, "too few seeds")


def findings(summary: dict[str, Any]) -> list[str]:
    """What the numbers say, worded from the numbers themselves."""
    out, by, scale = [], _models(summary), _scale(summary)
    m, fixed = summary.get("primary_model"), summary.get("fixed_modes")
    rec = summary.get("reconstruction_error", {})
    if rec.get("cmd") and rec.get("pca"):
        out.append(f"- **Reconstruction** ({MODELS.get(m, m)}, M = d = {fixed}): CMD {fmt(rec['cmd'].get(str(fixed)))}, "
                   f"PCA {fmt(rec['pca'].get(str(fixed)))}, DMD {fmt(rec.get('dmd', {}).get(str(fixed)))}. At equal "
                   "time-varying dimensions PCA can never be worse (Eckart-Young): "
                   + ("confirmed for every run." if summary.get("pca_never_worse_than_cmd") else
                      "**violated in some run** (a bug to report).")
                   + " CMD's case is storage: about three numbers per parameter whatever M is.")  # fmt: skip
    for key, mm in by.items():
        diffs = mm.get("minus_sgd", {})
        if not diffs:
            continue
        said = [f"{METHODS.get(k, k)} {_pp(e, scale, sign=True)} ({_significant(sign_of(e))})" for k, e in diffs.items()]
        out.append(f"- **Test accuracy, {MODELS.get(key, key)}**, paired differences to the SGD end point "
                   f"({_pp(mm['test_accuracy'].get('sgd'), scale)}{'%' if scale == 100 else ''}), in points: "
                   + "; ".join(said) + ".")  # fmt: skip
    if summary.get("online_vs_posthoc_max_abs_diff") is not None:
        frac = summary.get("online_state_floats_over_trajectory")
        out.append(f"- **Online CMD** matches the post-hoc fit with the same modes to "
                   f"{summary['online_vs_posthoc_max_abs_diff']:.1e} (largest |difference| of a, b over all runs); "
                   f"its state is {fmt(100 * frac, 2) if frac is not None else 'n/a'}% of the stored trajectory; one "
                   f"update took {fmt(1e3 * summary['online_update_seconds_per_snapshot'], 2)} ms against "
                   f"{fmt(summary['posthoc_fit_seconds'], 2)} s for a post-hoc fit.")  # fmt: skip
    held = {k: mm.get("heldout_error", {}) for k, mm in by.items()}
    vals = [v for h in held.values() for e in h.values() for v in e.values() if v is not None]
    if vals:
        best = "no method predicts the second half better than its own mean (every error > 1)" \
            if min(vals) > 1 else "some method predicts the second half better than its mean"
        parts = [f"{MODELS.get(k, k)} " + " / ".join(fmt(h.get(x, {}).get(str(fixed))) for x in ("cmd", "pca", "dmd"))
                 for k, h in held.items() if h]  # fmt: skip
        out.append(f"- **Extrapolation** (fitted on the first half of the snapshots, error on the second, CMD / PCA / "
                   f"DMD at M = {fixed}): " + "; ".join(parts) + f": {best}.")  # fmt: skip
    emb = summary.get("embedded_ci", {})
    if emb:
        out.append(f"- **Embedded CMD** ({MODELS.get(m, m)}): test accuracy "
                   + ", ".join(f"{_pp(e, scale)} with {float(f):.0%} of the parameters embedded"
                               for f, e in sorted(emb.items(), key=lambda kv: float(kv[0])))
                   + f", against SGD's {_pp(summary.get('test_accuracy', {}).get('sgd'), scale)}.")  # fmt: skip
    need = summary.get("modes_needed", {})
    if need:
        parts = [f"{PARAMS.get(p, p)} " + ", ".join(_count(v) for _, v in sorted(w.items(), key=lambda kv: int(kv[0])))
                 for p, w in need.items()]
        widths = " / ".join(sorted(next(iter(need.values())), key=int))
        out.append(f"- **Across parameterizations** (MLP, widths {widths}): modes needed for relative error ≤ "
                   f"{summary.get('error_threshold')}: " + "; ".join(parts) + ".")  # fmt: skip
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The study's results page, all from ``summary.json``."""
    scale = _scale(summary)
    unit = " (%)" if scale == 100 else ""
    lines = page_head("cmd study: results", "cmd", summary,
                      f"{summary.get('runs', 0)} runs. Means ± 95% t-intervals over seeds; differences to SGD are paired by "
                      "seed. Relative reconstruction error: squared error over the trajectory's variance around its "
                      "temporal mean.",
                      findings(summary))  # fmt: skip
    m = summary.get("primary_model")
    if summary.get("reconstruction_error"):
        lines += [f"### Relative reconstruction error, {MODELS.get(m, m)}", "",
                  *_errors(summary["reconstruction_error"])]  # fmt: skip
    by = _models(summary)
    if by:
        rows = []
        for method, name in METHODS.items():
            cells = []
            for mm in by.values():
                acc, diff = mm.get("test_accuracy", {}).get(method), mm.get("minus_sgd", {}).get(method)
                cells.append(_pp(acc, scale) + (f" ({_pp(diff, scale, sign=True)})" if diff else ""))
            rows.append([name, *cells])
        lines += [f"### Test accuracy{unit}, paired difference to SGD in brackets", "",
                  *table(["weights", *(MODELS.get(k, k) for k in by)], rows)]  # fmt: skip
        held = {k: mm["heldout_error"] for k, mm in by.items() if mm.get("heldout_error")}
        if held:
            lines += ["### Extrapolation error (second half of the snapshots)", ""]
            for k, h in held.items():
                lines += [f"{MODELS.get(k, k)}:", "", *_errors(h)]
    fixed = summary.get("error_at_fixed_modes", {})
    if fixed:
        widths = sorted({w for v in fixed.values() for w in v}, key=int)
        lines += [f"### Across parameterizations (MLP): error at M = {summary.get('fixed_modes')} / modes needed for "
                  f"error ≤ {summary.get('error_threshold')}", "",
                  *table(["param", *(f"width {w}" for w in widths)],
                         [[PARAMS.get(p, p), *(f"{ci(v.get(w), 3)} / "
                                               f"{_count(summary['modes_needed'].get(p, {}).get(w))}" for w in widths)]
                          for p, v in fixed.items()])]  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def headline(summary: dict[str, Any]) -> str:
    """One table cell: the measured answer with its intervals."""
    scale, by, fixed = _scale(summary), _models(summary), summary.get("fixed_modes")
    acc = [f"{MODELS.get(k, k)} {_pp(mm['minus_sgd'].get('cmd_posthoc'), scale, sign=True)}"
           for k, mm in by.items() if mm.get("minus_sgd", {}).get("cmd_posthoc")]  # fmt: skip
    signs = [sign_of(mm["minus_sgd"].get("cmd_posthoc")) for mm in by.values() if mm.get("minus_sgd")]
    gain = ("no significant gain" if all(s == 0 for s in signs) else
            "a significant gain somewhere" if any(s == 1 for s in signs) else "mixed")  # fmt: skip
    rec = summary.get("reconstruction_error", {})
    return (f"CMD post-hoc weights vs the SGD end point, test accuracy (points): {', '.join(acc)} ({gain}); "
            f"reconstruction error at M = {fixed}: CMD {fmt(rec.get('cmd', {}).get(str(fixed)))} vs PCA "
            f"{fmt(rec.get('pca', {}).get(str(fixed)))}"
            + (" (PCA never worse, as Eckart-Young says)." if summary.get("pca_never_worse_than_cmd") else "."))  # fmt: skip
