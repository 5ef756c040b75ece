"""The mat study's results page (``summary.md``, ``docs/results/mat.md``) and headline."""

from __future__ import annotations

from typing import Any

from .common import ci, fmt, page_head, sign_of, table

__all__ = ["headline", "markdown"]

MODELS = {"gpt": "GPT char-LM", "vit": "ViT"}
PARAMS = {"sp": "SP", "mup": "μP"}
VARIANTS = {"full": "full", "mat": "MAT", "random": "random", "inverse": "inverse MAT", "temporal": "temporal MAT"}


def _saving(entry: dict[str, Any] | None) -> str:
    s = sign_of(entry)
    if s is None:
        return "too few paired seeds to say"
    return {1: "a saving", 0: "no significant saving", -1: "a significant cost"}[s]


def _bill(m: dict[str, Any], variant: str) -> float | None:
    total = m.get("total_flops", {})
    full, v = (total.get(k, {}).get("mean") for k in ("full", variant))
    return 100.0 * (v / full - 1.0) if full and v else None


def _model_table(key: str, m: dict[str, Any]) -> list[str]:
    vit = key == "vit"
    rows = []
    for v in m.get("seeds", {}):
        gflops = {k: (e / 1e9 if e is not None else None) for k, e in (m["flops_to_target"].get(v) or {}).items()
                  if k in ("mean", "ci95")}  # fmt: skip
        rows.append([VARIANTS.get(v, v), f"{m['reached_target'].get(v, 0)}/{m['seeds'][v]}", ci(gflops, 0),
                     "-" if v == "full" else ci(m["flops_saved_pct_vs_full"].get(v), 1, sign=True),
                     "-" if v == "full" else ci(m["wall_saved_pct_vs_full"].get(v), 1, sign=True),
                     ci(m["final_val_loss"].get(v), 3),
                     ci(m["final_test_acc" if vit else "final_test_loss"].get(v), 3),
                     ci(m["active_fraction"].get(v), 2)])  # fmt: skip
    head = [f"{MODELS.get(key, key)} (target val loss {m['target_val_loss']:.3f})", "reached", "GFLOPs to target",
            "% FLOPs saved vs full", "% wall saved vs full", "final val loss", "test acc" if vit else "test loss",
            "active heads"]  # fmt: skip
    return [f"### {MODELS.get(key, key)}", "", *table(head, rows)]


def findings(summary: dict[str, Any]) -> list[str]:
    """What the numbers say, worded from the numbers themselves."""
    by = summary.get("by_model", {})
    out = []
    cv = summary.get("lambda_max_cv_across_heads", {})
    if cv:
        out.append("- **Heads differ.** The coefficient of variation of λmax across heads (full runs, mean over "
                   "measurements): " + ", ".join(f"{MODELS.get(k, k)} {ci(e, 2)}" for k, e in cv.items()) + ".")  # fmt: skip
    for key, m in by.items():
        mat = m.get("flops_saved_pct_vs_full", {}).get("mat")
        if mat is None:
            continue
        bill = _bill(m, "mat")
        text = (f"- **{MODELS.get(key, key)}: MAT to the target loss** ({m['reached_target'].get('mat', 0)} of "
                f"{m['seeds'].get('mat', 0)} seeds reached it, full training {m['reached_target'].get('full', 0)} of "
                f"{m['seeds'].get('full', 0)}): FLOPs saved vs full {ci(mat, 1, sign=True)}%, {_saving(mat)}; "
                f"wall time saved {ci(m['wall_saved_pct_vs_full'].get('mat'), 1, sign=True)}%.")  # fmt: skip
        if bill is not None:
            text += (f" Over the whole run, measurements charged, MAT used {abs(bill):.1f}% "
                     f"{'more' if bill > 0 else 'fewer'} FLOPs than full training, with "
                     f"{ci(m['active_fraction'].get('mat'), 2)} of the heads active on average.")  # fmt: skip
        diff = m.get("final_val_loss_mat_minus_random")
        if diff:
            s = sign_of(diff)
            says = {1: "MAT is worse", -1: "MAT is better", 0: "no significant difference"}.get(s, "too few seeds")
            text += (f" Against random gating at the same active count, MAT's final validation loss differs by "
                     f"{ci(diff, 3, sign=True)}: {says}.")  # fmt: skip
        out.append(text)
    saved = [sign_of(m.get("flops_saved_pct_vs_full", {}).get("mat")) for m in by.values()]
    if saved and all(s is not None and s <= 0 for s in saved):
        out.append("- **The paper's headline (MAT roughly halves training compute) does not reproduce at this "
                   "scale**: no model shows a significant FLOPs saving to the target loss.")  # fmt: skip
    cvp = summary.get("cv_by_param", {})
    if cvp:
        out.append("- **Heads under μP** (beyond the paper): CV of λmax across the GPT's heads, mean over training, "
                   + "; ".join(f"{PARAMS.get(p, p)} " + ", ".join(f"{fmt(v, 2)} (width {w})" for w, v in
                                                                     sorted(c.items(), key=lambda kv: int(kv[0])))
                               for p, c in cvp.items()) + ".")  # fmt: skip
    if summary.get("flop_counter_rel_error") is not None:
        out.append(f"- **FLOPs are counted per GEMM** and checked against torch's `FlopCounterMode` on a real gated "
                   f"step of every run: largest relative error {summary['flop_counter_rel_error']:.1e}.")  # fmt: skip
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The study's results page, all from ``summary.json``."""
    lines = page_head("mat study: results", "mat", summary,
                      f"{summary.get('runs', 0)} runs. Means ± 95% t-intervals over seeds; the % saved are paired by seed "
                      "over the seeds where both runs reached the target (the full runs' mean final validation loss times "
                      "1 + `mat.target.slack`). MAT and inverse MAT are charged their λmax measurements.",
                      findings(summary))  # fmt: skip
    for key, m in summary.get("by_model", {}).items():
        lines += _model_table(key, m)
    return "\n".join(lines).rstrip() + "\n"


def headline(summary: dict[str, Any]) -> str:
    """One table cell: the measured answer with its intervals."""
    by = summary.get("by_model", {})
    parts = [f"{MODELS.get(k, k)} {ci(m['flops_saved_pct_vs_full'].get('mat'), 1, sign=True)}%"
             for k, m in by.items() if m.get("flops_saved_pct_vs_full", {}).get("mat")]  # fmt: skip
    signs = [sign_of(m.get("flops_saved_pct_vs_full", {}).get("mat")) for m in by.values()]
    verdict = ("no significant saving: the paper's headline does not reproduce at this scale"
               if signs and all(s is not None and s <= 0 for s in signs) else "see the results page")  # fmt: skip
    cv = summary.get("lambda_max_cv_across_heads", {})
    spread = ", ".join(f"{MODELS.get(k, k)} {ci(e, 2)}" for k, e in cv.items())
    return (f"FLOPs saved by MAT to the target loss vs full training: {', '.join(parts)} ({verdict}); "
            f"heads' λmax CV {spread}.")  # fmt: skip
