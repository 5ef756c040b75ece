"""Benchmark tables of ``docs/spectral-engine.md`` from ``make bench``'s JSON.

``make bench`` writes one JSON file per benchmark to ``results/benchmarks/`` and its
``provenance.json`` (a file rerun on its own carries its own ``provenance`` entry);
``traindyn report`` copies them to ``docs/results/benchmarks/``. Each benchmark of
``LAYOUT`` gets its key numbers laid out for reading (the spectra workload by method, its
ratios and costs, the accuracy counts, ...); a benchmark without a layout is listed value by
value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .common import fmt, stamp, table

__all__ = ["benchmark_tables"]

# keys that describe the run rather than measure anything
SKIP = {"load_average_at_start", "load_average_at_end", "data", "trajectories", "torch", "quick", "threads",
        "device", "ours_missed", "benchmark", "total_s", "scalarisation", "provenance"}  # fmt: skip


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float):
        return fmt(v, 3) if isinstance(v, float) else f"{v:,}"
    if isinstance(v, list) and all(isinstance(x, int | float) for x in v) and len(v) <= 8:
        return ", ".join(_value(x) for x in v)
    return str(v) if not isinstance(v, dict | list) else ""


def _leaves(obj: Any, path: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        return [row for k, v in obj.items() if k not in SKIP for row in _leaves(v, (*path, str(k)))]
    text = _value(obj)
    return [(" / ".join(path), text)] if text else []


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _row(label: str, data: dict[str, Any], *paths: tuple[str, ...]) -> list[str] | None:
    """``[label, "v1 / v2 / ..."]`` from the values at ``paths`` (None when any is missing)."""
    values = [_get(data, p) for p in paths]
    if any(v is None for v in values):
        return None
    return [label, " / ".join(_value(v) for v in values)]


def _train(data: dict[str, Any]) -> list[str]:
    rows = [_row("overhead of the pipeline's loop (evaluation, checkpoints, tracking) over a bare PyTorch loop, "
                 "wall / CPU time", data, ("overhead_ratio",), ("overhead_ratio_cpu_time",)),
            _row("target", data, ("target_overhead",)), _row("met", data, ("meets_target",)),
            *[_row(f"share of the bare loop's time: {k}", data, ("overhead_components_share_of_b", k))
              for k in (data.get("overhead_components_share_of_b") or {})],
            _row("same batches, same losses", data, ("same_batches_same_losses",))]  # fmt: skip
    return [f"{data.get('benchmark', '')}:", "", *table(["measure", "value"], [r for r in rows if r])]


def _rows(data: dict[str, Any], spec: list[tuple[str, tuple[tuple[str, ...], ...]]]) -> list[str]:
    rows = [_row(label, data, *paths) for label, paths in spec]
    return table(["measure", "value"], [r for r in rows if r])


def _cmd(data: dict[str, Any]) -> list[str]:
    fit = data.get("posthoc_fit", {})
    head = (f"Post-hoc CMD of a synthetic {fit.get('t')} x {fit.get('n', 0):,} trajectory (K = {fit.get('k')}, "
            f"M = {fit.get('m')}), and the cost of capturing a real run's trajectory:")  # fmt: skip
    return [head, "", *_rows(data, [
        ("post-hoc fit, seconds (target 30)", (("posthoc_fit", "fit_seconds"),)),
        ("post-hoc fit, peak memory / trajectory size (target 3)", (("posthoc_fit", "memory_ratio"),)),
        ("online update per snapshot, seconds", (("posthoc_fit", "online_update_seconds_per_snapshot"),)),
        ("online update vs refitting a, b / vs the full fit, speed-up",
         (("posthoc_fit", "online_speedup_vs_refit_ab"), ("posthoc_fit", "online_speedup_vs_full_fit"))),
        ("trajectory capture, training overhead in CPU time / wall time",
         (("capture", "cpu_overhead"), ("capture", "overhead"))),
        ("trajectory capture, target overhead", (("capture", "target_overhead"),)),
    ])]  # fmt: skip


def _mat(data: dict[str, Any]) -> list[str]:
    return [f"MAT's costs on the mat study's GPT ({data.get('heads')} heads, batch {data.get('batch')}):", "",
            *_rows(data, [
                ("every head's λmax in one pass / one full-NTK λmax (target ≤ 2)", (("ratio_all_heads_over_full",),)),
                ("half the heads gated: % of a step's FLOPs saved / % of its wall time saved",
                 (("flops_saved_pct_half_gated",), ("wall_saved_pct_half_gated",))),
                ("one λmax measurement of every head, in training steps: FLOPs / wall time",
                 (("measure_in_steps_flops",), ("measure_in_steps_wall",))),
            ])]  # fmt: skip


def _attention(data: dict[str, Any]) -> list[str]:
    widths = data.get("widths", {})
    rows = [[w, _value(e.get("per_head_ms")), _value(e.get("batched_ms")), _value(e.get("batched_foreach_ms")),
             _value(e.get("speedup_batched")), _value(e.get("speedup_batched_foreach"))] for w, e in widths.items()]  # fmt: skip
    return ["The GPT's training step with each head's own forward against the heads batched into one call "
            "(and foreach Adam), ms per step:", "",
            *table(["width", "per head", "batched", "batched + foreach Adam", "speed-up", "speed-up with foreach"],
                   rows)]  # fmt: skip


def _tracking(data: dict[str, Any]) -> list[str]:
    return [f"Importing {data.get('records')} deferred MLflow records into a fresh store:", "", *_rows(data, [
        ("seconds per record: `traindyn track` / MLflow's client call by call",
         (("seconds_per_record", "traindyn"), ("seconds_per_record", "mlflow_client"))),
        ("speed-up", (("speedup_vs_mlflow_client",),)),
        ("same store contents", (("same_store_contents",),)),
    ])]  # fmt: skip


def _spectra(data: dict[str, Any]) -> list[str]:
    out = []
    sharp = data.get("sharpness_along_training", {})
    summary = sharp.get("summary", {})
    if summary.get("totals"):
        rows = [[name, _value(e.get("products")), fmt(e.get("seconds"), 3), _value(e.get("all_within_target"))]
                for name, e in summary["totals"].items()]  # fmt: skip
        out += [f"**Sharpness along training** ({len(sharp.get('trajectories', []))} runs, "
                f"{sharp.get('states_per_run')} states each, every {sharp.get('every')} steps; relative error "
                f"target {sharp.get('target_rel_err')} against a float64 reference at every state):", "",
                *table(["method", "Hessian-vector products", "seconds", "within target at every state"], rows)]  # fmt: skip
    if summary.get("claims"):
        out += ["Ratios (above 1: ours needs fewer products or less time):", "",
                *table(["comparison", "ratio"], [[k, _value(v)] for k, v in summary["claims"].items()])]  # fmt: skip
    rows = [
        _row("one Lanczos step / one Hessian-vector product, cold, at 10 / 20 / 40 steps", data,
             *(("lanczos_step", f"step_over_hvp ({n} steps)") for n in (10, 20, 40))),
        _row("passes over the Krylov basis in 10 / 20 / 40 steps", data,
             *(("lanczos_step", f"reorth_steps ({n} steps)") for n in (10, 20, 40))),
        _row("Hessian-vector product / gradient: ours (retained double backward)", data,
             ("hvp_cost", "library_hvp_over_gradient")),
        *[_row(f"Hessian-vector product / gradient: {name}", data, ("hvp_cost", "hvp_over_gradient", name))
          for name in ("double_backward_rebuilt_each_call", "forward_over_reverse (torch.func jvp of grad)",
                       "reverse_over_reverse (torch.func vjp of grad)")],
    ]  # fmt: skip
    ntk = data.get("ntk_matrix_free_vs_explicit", {})
    small, large = ntk.get("feasible_size", {}), ntk.get("large", {})
    if small:
        what = f"NTK λmax, {small.get('n_params', 0):,} parameters, n = {small.get('n')}"
        rows += [_row(f"{what}: time, `torch.func.jacrev` / ours (matrix-free)", small,
                      ("time_explicit_over_matrix_free",)),
                 _row(f"{what}: peak memory, `jacrev` / ours", small, ("peak_memory_explicit_over_matrix_free",)),
                 _row(f"{what}: relative difference of λmax", small, ("lambda_max_rel_diff",))]  # fmt: skip
    if large:
        rows.append(_row(f"NTK λmax, {large.get('n_params', 0):,} parameters, n = {large.get('n')}: ours, seconds "
                         "/ MB of memory added", large, ("matrix_free", "time_s"),
                         ("matrix_free", "peak_increase_mb")))  # fmt: skip
    for key, what in (("mlp_layers", "MLP layers"), ("transformer_heads", "attention heads")):
        rows.append(_row(f"every module's λmax in one pass / one full-NTK λmax ({what})", data,
                         ("module_ntk", key, "ratio_all_modules_over_full")))  # fmt: skip
    load = [data.get(k) for k in ("load_average_at_start", "load_average_at_end")]
    if all(isinstance(x, list) and x for x in load):
        # A busy machine slows the side that happens to run while it is busy: say how busy it was.
        rows.append(["the machine's one-minute load average at the start / end of this benchmark",
                     f"{load[0][0]:.2f} / {load[1][0]:.2f}"])  # fmt: skip
    rows = [r for r in rows if r]
    if rows:
        out += ["Costs (ratios of times unless named):", "", *table(["measure", "value"], rows)]
    return out


def _accuracy(data: dict[str, Any]) -> list[str]:
    target = data.get("target_rel_err")
    rows = []
    for measure, e in data.get("by_measure", {}).items():
        rows.append([f"{measure} (ours)", _value(e.get("measurements")), _value(e.get("ours_misses")),
                     fmt(e.get("ours_worst_rel_err"), 2), _value(e.get("ours_products"))])  # fmt: skip
        if "arpack_products" in e:
            a = data.get("arpack", {})
            rows.append([f"{measure} (ARPACK ncv {a.get('ncv')}, tol {a.get('tol')}, warm)",
                         _value(e.get("measurements")), _value(e.get("arpack_misses")),
                         fmt(e.get("arpack_worst_rel_err"), 2), _value(e.get("arpack_products"))])  # fmt: skip
    return [f"**Every top eigenvalue the scaling study writes** ({data.get('runs')} runs) against a float64 "
            f"reference at the same weights:", "",
            *table(["measure", "measurements", f"off by more than {target}", "worst relative error",
                    "products"], rows)]  # fmt: skip


LAYOUT = {"spectra": _spectra, "spectra_accuracy": _accuracy, "train": _train, "cmd": _cmd, "mat": _mat,
          "attention": _attention, "tracking": _tracking}


def benchmark_tables(folder: Path) -> str:
    """Markdown tables from the committed benchmark JSON in ``folder``."""
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*.json") if p.name != "provenance.json")
    if not files:
        return "No benchmark results are committed yet: run `make bench`, then `make docs`.\n"
    prov = json.loads((folder / "provenance.json").read_text()) if (folder / "provenance.json").is_file() else None
    lines = [stamp(prov, "`make bench`") + " One thread per benchmark, each comparison side by side in one run.", ""]
    order = sorted(files, key=lambda p: (p.stem not in LAYOUT, list(LAYOUT).index(p.stem) if p.stem in LAYOUT else 0,
                                         p.stem))  # fmt: skip
    for path in order:
        data = json.loads(path.read_text())
        lines += [f"### `benchmarks/{'bench_' if path.stem != 'spectra_accuracy' else ''}{path.stem}.py`", ""]
        if data.get("provenance") and data["provenance"] != prov:  # rerun on its own, after the others
            lines += [stamp(data["provenance"], f"`{path.name}`"), ""]
        lines += LAYOUT[path.stem](data) if path.stem in LAYOUT else \
            table(["measure", "value"], [list(r) for r in _leaves(data)])
    return "\n".join(lines).rstrip() + "\n"
