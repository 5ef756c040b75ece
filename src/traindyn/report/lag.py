"""The lag study's results page (``summary.md``, ``docs/results/lag.md``) and headline."""

from __future__ import annotations

from typing import Any

from ..grow.analysis import paired_order_holds
from .common import ci, fmt, page_head, table

__all__ = ["headline", "markdown"]

def _param(p: str) -> str:
    """``sp`` -> SP, ``mup-a0.5`` -> depth-μP (α = 0.5)."""
    if p.startswith("mup"):
        alpha = p.partition("-a")[2]
        return f"depth-μP (α = {alpha})" if alpha else "μP"
    return p.upper()


def _by_param(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in sorted(d, key=lambda p: (p != "sp", p))}


def _name(s: str) -> str:
    return s.removesuffix("-moments").replace("_", " ")


def _band(e: dict[str, Any] | None) -> str:
    if not e or e.get("boot_lo") is None:
        return ""
    return f" [{e['boot_lo']:.2f}, {e['boot_hi']:.2f}]"


def _first_lag(summary: dict[str, Any], param: str = "sp") -> tuple[int | None, float]:
    hit = summary.get("lag_at_threshold", {}).get(param, {})
    return hit.get("lag"), hit.get("threshold", 0.8)


def findings(summary: dict[str, Any]) -> list[str]:
    """What the numbers say, worded from the numbers themselves."""
    out, T = [], summary.get("T")
    rho = summary.get("spearman_by_lag", {})
    lag, thr = _first_lag(summary)
    if rho:
        r0 = rho.get("0")
        at = rho.get(str(lag)) if lag is not None else None
        text = (f"- **Early prediction (SP)**: Spearman rho between l(k) and the final l(T) over the ranked strategies "
                f"is {ci(r0)}{_band(r0)} at growth (k = 0)")  # fmt: skip
        if lag is None:
            text += f" and never reaches {thr} within T = {T} steps."
        else:
            text += (f"; the mean first reaches {thr} at k = {lag} ({lag / T:.0%} of T = {T}), where rho = {ci(at)}"
                     f"{_band(at)}.")  # fmt: skip
        g = summary.get("rho_at_growth_vs_lag", {}).get("sp")
        if g and g.get("difference"):
            verdict = {True: "below", False: "above", None: "not clearly below"}[g.get("below")]
            claim = {True: "holds", False: "fails", None: "is not shown"}[g.get("below")]
            text += (f" Paired by seed, rho(k = {g['lag']}) - rho(0) = {ci(g['difference'], sign=True)}"
                     f"{_band(g['difference'])}: rho(0) is {verdict} rho({g['lag']}), so the paper's claim that the "
                     f"loss at growth ranks worse than the loss after a short lag {claim} at this scale.")  # fmt: skip
        elif lag is not None:
            below = r0 and at and r0["mean"] is not None and (r0["mean"] + (r0.get("ci95") or 0)
                                                                < at["mean"] - (at.get("ci95") or 0))  # fmt: skip
            text += (f" rho(0) is {'below' if below else 'not clearly below'} rho at that lag "
                     f"({'the intervals apart' if below else 'the intervals overlap'}).")  # fmt: skip
        out.append(text)
    for p, s in _by_param(summary.get("strategy_spread_over_seed_sd", {})).items():
        if s.get("ratio") is None:
            continue
        if s["ratio"] >= 1:
            power = "the strategies' final losses differ by more than seed noise"
        elif paired_order_holds(s):
            power = ("the strategies' mean final losses differ by less than the seed-to-seed spread, which is "
                     "mostly the bases' own (a seed worse for one strategy is worse for all), but paired by seed "
                     "they differ by more than the noise within a seed: each seed's ranking, the one the "
                     "correlations score, holds; which strategy is best on average over bases is within seed noise")  # fmt: skip
        else:
            power = ("the strategies' final losses differ by less than the seed-to-seed noise, so the ranking the "
                     "correlations score is mostly noise at this scale")  # fmt: skip
        rb = (f" [{s['ratio_boot_lo']:.2f}, {s['ratio_boot_hi']:.2f}]" if s.get("ratio_boot_lo") is not None else "")
        pb = (f" [{s['ratio_paired_boot_lo']:.2f}, {s['ratio_paired_boot_hi']:.2f}]"
              if s.get("ratio_paired_boot_lo") is not None else "")  # fmt: skip
        out.append(f"- **Power, {_param(p)}**: the sd of the strategies' mean final loss is "
                   f"{fmt(s['spread'], 2)} nats against a seed sd of {fmt(s['seed_sd'], 2)} (ratio "
                   f"{fmt(s['ratio'], 2)}{rb}; paired by seed {fmt(s.get('ratio_paired'), 2)}{pb}): {power}. Best: "
                   f"{_name(s.get('best', '?'))}, ahead of the next by {fmt(s.get('best_gap'), 2)} nats.")  # fmt: skip
    by_param = _by_param(summary.get("spearman_by_lag_by_param", {}))
    if len(by_param) > 1:
        parts = []
        for p in by_param:
            lp, _ = _first_lag(summary, p)
            parts.append(f"{_param(p)} rho(0) = {ci(by_param[p].get('0'))}, first k with rho ≥ {thr}: "
                         f"{lp if lp is not None else 'none'}")  # fmt: skip
        out.append("- **SP vs depth-μP**: " + "; ".join(parts) + ".")
    best = _by_param(summary.get("post_growth_best_lr_factor", {}))
    grid = summary.get("post_growth_lr_factors", {})
    if best:
        parts = []
        for p, f in best.items():
            g = grid.get(p, [])  # the finite grid: the best at either end is an edge
            edge = g and (f == min(g) or f == max(g))
            gone = summary.get("post_growth_lr", {}).get(p, {}).get("diverged_factors") or []
            parts.append(f"{_param(p)} x{fmt(f, 2)} of the base LR" +
                         (f" (**at the edge** of the grid {', '.join(f'{x:g}' for x in g)}: not an optimum)" if edge
                          else f" (interior to the grid {', '.join(f'{x:g}' for x in g)})" if g else "") +
                         (f"; diverged at x{', x'.join(f'{x:g}' for x in gone)}" if gone else ""))  # fmt: skip
        out.append("- **Post-growth LR sweep**, best factor: " + "; ".join(parts) + ".")
    stack = summary.get("adaptive_vs_fixed", {})
    if "adaptive" in stack:
        a = stack["adaptive"]
        parts, verdicts = [], []
        for s, e in stack.items():
            d = e.get("adaptive_minus_this")
            if d:
                verdict = e.get("verdict") or "too few seeds"  # the aggregation's, from d's interval
                verdicts.append(verdict)
                parts.append(f"{_name(s)} {ci(d, 3, sign=True)} ({verdict}; {e['total_steps']} steps)")
        better, worse = verdicts.count("adaptive better"), verdicts.count("adaptive worse")
        claim = ("the paper's claim that adaptive stacking beats fixed schedules holds here" if verdicts and
                 better == len(verdicts) else f"the paper's claim that adaptive stacking beats fixed schedules is "
                 f"not shown at this scale: adaptive is better than {better}, worse than {worse} and not "
                 f"distinguishable from {len(verdicts) - better - worse} of the {len(verdicts)} fixed schedules")
        out.append(f"- **Adaptive gradual stacking** (n = {a.get('n')} seeds, final loss {ci(a, 3)}, "
                   f"{a.get('total_steps')} steps with its probes), adaptive minus each fixed schedule: "
                   + "; ".join(parts) + f". `_pc`: the fixed schedule given the probes' steps too. So {claim}.")
    mom = summary.get("moments_ablation", {})
    for s, e in mom.items():
        out.append(f"- **Grown Adam moments** ({_name(s)}): {ci(e.get('minus_fresh'), 4, sign=True)} nats against a "
                   "fresh AdamW.")  # fmt: skip
    fall = summary.get("base_relative_fall")
    if fall:
        under = summary.get("base_undertrained", [])
        out.append(f"- **Bases**: validation loss fell {ci(fall, 3, scale=100)}% over the last quarter of base "
                   "training; " + (f"undertrained by the study's check: {', '.join(under)}." if under else
                                   "every base is past its plateau by the study's check."))  # fmt: skip
    return out


def markdown(summary: dict[str, Any]) -> str:
    """The study's results page, all from ``summary.json``."""
    lines = page_head("lag study: results", "lag", summary,
                      f"{summary.get('n_runs', 0)} runs, {summary.get('n_diverged', 0)} diverged; T = {summary.get('T')} "
                      "steps after growth. Means ± 95% t-intervals over seeds, [bootstrap 95% band over seeds]; the "
                      "correlations rank the growth strategies (scratch is a control, not ranked).",
                      findings(summary))  # fmt: skip
    rho, tau = summary.get("spearman_by_lag", {}), summary.get("kendall_by_lag", {})
    if rho:
        ks = sorted(rho, key=int)
        top1, regret, cost = (summary.get(k, {}) for k in ("top1_by_lag", "regret_by_lag", "selection_cost_steps"))
        lines += ["### Early prediction across lags (SP)", "", *table(
            ["k (steps since growth)", "Spearman rho(k) vs l(T)", "Kendall tau(k)", "top-1 accuracy", "regret (nats)",
             "selection cost (c - 1) k (steps)"],
            [[k, ci(rho[k]) + _band(rho[k]), ci(tau.get(k)), fmt((top1.get(k) or {}).get("mean"), 2),
              fmt((regret.get(k) or {}).get("mean"), 2), str(cost.get(k, ""))] for k in ks])]  # fmt: skip
    final, start = summary.get("final_loss", {}), summary.get("loss_at_growth", {})
    if final:
        order = sorted(final, key=lambda s: final[s]["mean"] if final[s]["mean"] is not None else float("inf"))
        lines += ["### Loss at growth and at the end (SP)", "", *table(
            ["strategy", "l(0)", "l(T)"], [[_name(s), ci(start.get(s), 4), ci(final[s], 4)] for s in order])]  # fmt: skip
    sweep = _by_param(summary.get("post_growth_lr", {}))
    if sweep:
        factors = sorted({f for o in sweep.values() for f in o.get("factors", [])})
        means = {p: dict(zip(o.get("factors", []), o.get("means", []), strict=False)) for p, o in sweep.items()}
        lines += ["### Post-growth LR sweep (final loss, mean over the sweep's seeds)", "", *table(
            ["LR factor", *(_param(p) for p in sweep)],
            [[fmt(f, 3)] + [fmt(means[p].get(f), 4) + (" **best**" if sweep[p].get("best_factor") == f else "") for p in sweep]
             for f in factors])]  # fmt: skip
    stack = summary.get("adaptive_vs_fixed", {})
    if stack:
        lines += ["### Gradual stacking (last stage)", "", *table(
            ["schedule", "final loss", "total steps", "adaptive minus this", "verdict"],
            [[_name(s), ci(e, 3), str(e.get("total_steps")), ci(e.get("adaptive_minus_this"), 3, sign=True),
              e.get("verdict") or ""] for s, e in stack.items()])]  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def headline(summary: dict[str, Any]) -> str:
    """One table cell: the measured answer with its intervals."""
    rho = summary.get("spearman_by_lag", {})
    lag, thr = _first_lag(summary)
    T = summary.get("T")
    first = (f"first ≥ {thr} at k = {lag} ({lag / T:.0%} of T)" if lag is not None else f"never ≥ {thr} within T")
    s = summary.get("strategy_spread_over_seed_sd", {}).get("sp", {})
    power = ""
    if s.get("ratio") is not None:
        paired = s.get("ratio_paired")
        power = f"; strategy spread / seed sd {fmt(s['ratio'], 2)}"
        if paired is not None:
            power += f" (paired by seed {fmt(paired, 2)})"
        if s["ratio"] < 1:
            power += (": below 1, so the strategies' final losses differ by less than seed noise"
                      + ("; within a seed their order holds" if paired_order_holds(s) else ""))  # fmt: skip
    return f"Spearman rho(l(k), l(T)): rho(0) = {ci(rho.get('0'))}, {first}{power}."
