"""The scaling study's results page (``summary.md``, ``docs/results/scaling.md``) and headline."""

from __future__ import annotations

from typing import Any

from .common import ci, page_head, table

__all__ = ["headline", "markdown", "transfer_verdict"]

NAMES = {"sp": "SP", "ntk": "NTK", "mup": "μP"}
EDGE_SHARE = 0.25  # above this share of fitted optima at the largest stable η0, a shift is the edge's
OCTAVE = 1.0  # "transfers": |shift| + ci95 within one octave from the smallest to the largest size


def _name(key: str) -> str:
    return NAMES.get(key) or " ".join(NAMES.get(p, p) for p in key.split("_"))


def transfer_verdict(entry: dict[str, Any] | None) -> str:
    """How an LR shift reads against one octave.

    ``transfers`` (|shift| + ci95 within an octave, the interval holding 0), ``drifts`` (within
    an octave, the interval excluding 0), ``moves`` (beyond an octave, interval and all),
    ``unclear``, ``edge`` (most optima at the stability edge) or ``none`` (no fit).
    """
    if not entry or entry.get("mean") is None:
        return "none"
    if entry.get("optimum_at_edge_share", 0.0) > EDGE_SHARE:
        return "edge"
    m, h = abs(entry["mean"]), entry.get("ci95") or 0.0
    if m + h <= OCTAVE:
        return "drifts" if m - h > 0 else "transfers"
    return "moves" if m - h > OCTAVE else "unclear"


_SAYS = {
    "transfers": "transfers (within one octave, the interval holding 0)",
    "drifts": "drifts, by less than an octave (the interval excludes 0)",
    "moves": "does not transfer (the optimum moves by more than an octave)",
    "unclear": "not established (the interval reaches past one octave)",
    "edge": "an edge shift: most fitted optima are the largest stable η0, not interior optima",
    "none": "no shift fitted",
}


def _boot(entry: dict[str, Any] | None) -> str:
    mc = (entry or {}).get("mean_curve")
    if not mc or mc.get("shift") is None:
        return "n/a"
    if mc.get("lo") is None:
        return f"{mc['shift']:+.2f}"
    return f"{mc['shift']:+.2f} [{mc['lo']:+.2f}, {mc['hi']:+.2f}]"


def _sizes(entry: dict[str, Any], key: str) -> str:
    return " / ".join(f"{float(v):.3g}" for _, v in sorted(entry[key].items(), key=lambda kv: int(kv[0])))


def _shift_table(title: str, shifts: dict[str, Any], label: str, axis: str) -> list[str]:
    sizes = " / ".join(sorted(next(iter(shifts.values()))["best_lr"], key=int))
    rows = [[_name(k), ci(e, sign=True), _boot(e), f"{e['optimum_at_edge_share']:.2f}", _sizes(e, "best_lr"),
             _sizes(e, "largest_stable_lr")] for k, e in shifts.items()]  # fmt: skip
    return [f"### {title}", "", *table(
        [label, "LR shift, per-seed optima (oct)", "LR shift, mean curve [bootstrap 95%] (oct)",
         "optimum at grid edge", f"fitted best η0 at {axis} {sizes}", "largest stable η0"], rows)]  # fmt: skip


def _spread_table(summary: dict[str, Any], keys: list[tuple[str, str]], axis: str = "widths",
                  label=_name) -> list[str]:  # fmt: skip
    present = [(k, name) for k, name in keys if k in summary]
    if not present:
        return []
    rows = sorted({p for k, _ in present for p in summary[k]})
    return [f"### Sharpness across {axis} (base-LR units; time-mean over steps > 5%)", "", *table(
        ["run set", *(name for _, name in present)],
        [[label(r), *(ci(summary[k].get(r), 3) for k, _ in present)] for r in rows])]  # fmt: skip


def _gpt_alpha(key: str) -> str:
    """The GPT depth sweep's alpha, named: 0 is the standard GPT (no depth scaling at all)."""
    return "standard GPT (α = 0)" if float(key.split("_")[0]) == 0 else f"depth-μP α = {key}"


def _range(entry: dict[str, Any], axis: str) -> str:
    a, b = entry.get(f"{axis}_small"), entry.get(f"{axis}_large")
    return f"{axis} {a} to {b}" if a is not None else axis


def _transfer_lines(title: str, shifts: dict[str, Any], axis: str, label=_name) -> str:
    parts = []
    for key, e in shifts.items():
        v = transfer_verdict(e)
        if v == "none":
            lost = [k for k, x in e.get("largest_stable_lr", {}).items() if not x == x]  # NaN: every η0 diverged
            parts.append(f"{label(key)}: no shift fitted" + (f" ({axis} {', '.join(lost)} diverged at "
                                                              f"every η0)" if lost else ""))  # fmt: skip
            continue
        parts.append(f"{label(key)} {ci(e, sign=True)} octaves (edge share {e['optimum_at_edge_share']:.2f}): "
                     f"{_SAYS[v]}")  # fmt: skip
    first = next(iter(shifts.values()))
    return f"- **{title}** ({_range(first, axis)}): " + "; ".join(parts) + "."


def _separated(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool | None:
    """Whether the first 95% interval lies wholly below the second (None when either is missing)."""
    if not a or not b or a.get("mean") is None or b.get("mean") is None:
        return None
    return a["mean"] + (a.get("ci95") or 0) < b["mean"] - (b.get("ci95") or 0)


def _consistency_lines(summary: dict[str, Any]) -> list[str]:
    out = []
    spread = summary.get("sharpness_spread", {})
    for suffix, loss in (("", "cross-entropy"), ("_mse", "MSE")):
        mup, ntk, sp = (spread.get(f"{p}{suffix}") for p in ("mup", "ntk", "sp"))
        if not mup or not ntk:
            continue
        sep = _separated(mup, ntk)
        says = ("μP's spread is smaller than NTK's, their 95% intervals apart: super consistency holds" if sep
                else "the intervals overlap: μP is not shown to be more consistent than NTK")  # fmt: skip
        out.append(f"- **Sharpness across width, {loss}** (spread S of log sharpness over widths, lower is more "
                   f"consistent): μP {ci(mup, 3)}, NTK {ci(ntk, 3)}, SP {ci(sp, 3)}; {says}.")  # fmt: skip
    pre_d = summary.get("preconditioned_sharpness_spread_depth_gpt", {})
    if pre_d:
        hess_d = summary.get("sharpness_spread_depth_gpt", {})
        items = [f"{_gpt_alpha(k)} {ci(e, 3)} (Hessian {ci(hess_d.get(k), 3)})" for k, e in pre_d.items()]
        says = ""
        if pre_d.get("0.5") and pre_d.get("0"):
            sep = _separated(pre_d["0.5"], pre_d["0"])
            says = ("; depth-μP's is smaller, the intervals apart" if sep
                    else "; depth-μP is not shown to be more consistent across depth than the standard GPT")  # fmt: skip
        out.append("- **GPT with Adam across depth**: Adam-preconditioned sharpness spread over depths "
                   + ", ".join(items) + says + ".")  # fmt: skip
    pre = summary.get("preconditioned_sharpness_spread_gpt", {})
    hess = summary.get("sharpness_spread_gpt", {})
    if pre.get("mup") and pre.get("sp"):
        sep = _separated(pre["mup"], pre["sp"])
        says = ("μP's is smaller, the intervals apart" if sep
                else "μP is not shown to be more consistent than SP here")  # fmt: skip
        out.append(f"- **GPT with Adam**: Adam-preconditioned sharpness spread μP {ci(pre['mup'], 3)} vs SP "
                   f"{ci(pre['sp'], 3)} (Hessian: μP {ci(hess.get('mup'), 3)}, SP {ci(hess.get('sp'), 3)}); "
                   f"{says}.")  # fmt: skip
    return out


def findings(summary: dict[str, Any]) -> list[str]:
    """What the numbers say, one bullet per claim, worded from the numbers themselves."""
    out = []
    if "lr_shift_octaves" in summary:
        out.append(_transfer_lines("LR transfer across width, MLP with SGD", summary["lr_shift_octaves"], "width"))
    if "lr_shift_octaves_gpt" in summary:
        out.append(_transfer_lines("LR transfer across width, GPT with Adam", summary["lr_shift_octaves_gpt"],
                                   "width"))  # fmt: skip
    if "depth_lr_shift_octaves" in summary:
        out.append(_transfer_lines("LR transfer across depth, residual MLP (branch scale L^-α)",
                                   summary["depth_lr_shift_octaves"], "depth", lambda k: f"α = {k}"))  # fmt: skip
    if "depth_lr_shift_octaves_gpt" in summary:
        out.append(_transfer_lines("LR transfer across depth, GPT with Adam", summary["depth_lr_shift_octaves_gpt"],
                                   "depth", _gpt_alpha))  # fmt: skip
    return out + _consistency_lines(summary)


def markdown(summary: dict[str, Any]) -> str:
    """The study's results page: stamp, findings, then the tables, all from ``summary.json``."""
    lines = page_head("Scaling study: results", "scaling", summary,
                      f"{summary['n_runs']} runs, {summary['n_diverged']} diverged. Means ± 95% t-intervals over seeds; "
                      "the mean-curve shift is fitted to the seed-mean loss curve, its interval a percentile bootstrap over "
                      "seeds. An LR shift is the fitted optimum's move in octaves (log2) from the smallest to the largest "
                      f"size; it counts as transfer when |shift| + interval ≤ {OCTAVE:g} octave, and as an edge shift when "
                      f"more than {EDGE_SHARE:.0%} of the fitted optima are the largest stable η0.",
                      findings(summary))  # fmt: skip
    if "lr_shift_octaves" in summary:
        lines += _shift_table("LR transfer across width (MLP, SGD)", summary["lr_shift_octaves"], "param", "width")
    if "lr_shift_octaves_gpt" in summary:
        lines += _shift_table("LR transfer across width (GPT char-LM, Adam)", summary["lr_shift_octaves_gpt"],
                              "param", "width")  # fmt: skip
    if "depth_lr_shift_octaves" in summary:
        lines += _shift_table("LR transfer across depth (residual MLP, branch scale L^-α)",
                              {f"α = {k}": v for k, v in summary["depth_lr_shift_octaves"].items()}, "α", "depth")  # fmt: skip
    if "depth_lr_shift_octaves_gpt" in summary:
        lines += _shift_table("LR transfer across depth (GPT char-LM, Adam, μP)",
                              {_gpt_alpha(k): v for k, v in summary["depth_lr_shift_octaves_gpt"].items()}, "α",
                              "depth")  # fmt: skip
    lines += _spread_table(summary, [
        ("sharpness_spread", "spread S (MLP)"),
        ("sharpness_ratio_small_over_large", "ratio smallest / largest width (MLP)"),
        ("sharpness_spread_gpt", "spread S, Hessian (GPT)"),
        ("preconditioned_sharpness_spread_gpt", "spread S, preconditioned (GPT)"),
    ])  # fmt: skip
    lines += _spread_table(summary, [
        ("sharpness_spread_depth_gpt", "spread S, Hessian"),
        ("preconditioned_sharpness_spread_depth_gpt", "spread S, preconditioned"),
        ("preconditioned_sharpness_ratio_small_over_large_depth_gpt", "preconditioned, ratio shallowest / deepest"),
    ], "depths (GPT, Adam)", _gpt_alpha)  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def headline(summary: dict[str, Any]) -> str:
    """One table cell: the measured answer with its intervals."""
    parts = []
    for key, what in (("lr_shift_octaves", "MLP with SGD"), ("lr_shift_octaves_gpt", "GPT with Adam")):
        shifts = summary.get(key)
        if not shifts:
            continue
        items = [f"{_name(p)} {ci(e, sign=True)} ({transfer_verdict(e)})" for p, e in shifts.items()]
        parts.append(f"best-LR shift across width, {what} (octaves): " + ", ".join(items))
    spread = summary.get("sharpness_spread", {})
    if spread.get("mup") and spread.get("ntk"):
        sep = _separated(spread["mup"], spread["ntk"])
        parts.append(f"sharpness spread μP {ci(spread['mup'], 3)} vs NTK {ci(spread['ntk'], 3)} "
                     f"({'super consistency holds' if sep else 'not separated'})")  # fmt: skip
    depth = summary.get("depth_lr_shift_octaves")
    if depth:
        half = depth.get("0.5") or next(iter(depth.values()))
        v = transfer_verdict(half)
        share = half.get("optimum_at_edge_share", 0.0)
        parts.append("residual MLP with SGD, depth-μP (α = 1/2): " + (f"{share:.0%} of the fitted optima at the stability edge, so depth "
                                               "transfer of an optimum is not reproduced here" if v == "edge"
                                               else f"{ci(half, sign=True)} octaves ({v})"))  # fmt: skip
    gdepth = summary.get("depth_lr_shift_octaves_gpt")
    if gdepth and gdepth.get("0.5"):
        half, std = gdepth["0.5"], gdepth.get("0")
        text = f"GPT with Adam across depth, depth-μP: {ci(half, sign=True)} octaves ({transfer_verdict(half)})"
        if std:
            text += f", standard GPT {ci(std, sign=True)} ({transfer_verdict(std)})"
        parts.append(text)
    return "; ".join(parts) + "."
