"""The workflow as code: lint, format, dry run on every config, and the tiny end-to-end DAG."""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, snakemake


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    out = subprocess.run([ruff, "check", "src", "tests", "benchmarks", "notebooks"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_snakefmt_is_clean():
    exe = shutil.which("snakefmt", path=str(Path(sys.executable).parent))
    out = subprocess.run([exe, "--check", "Snakefile", "workflow/rules"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_snakemake_lint(tmp_path, venv_env):
    out = snakemake(["--lint"], tmp_path, venv_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Lints for" not in out.stdout + out.stderr, out.stdout + out.stderr


def test_dry_run_of_default_config_is_fast(tmp_path, venv_env):
    import resource

    # CPU seconds of the snakemake process, not wall time: the bound must hold on a loaded
    # machine too. The default DAG's ~1100 jobs took 8-9 s of CPU at load 5 (a mistyped run
    # id must fail to match, so each training rule's constraint lists its ids); 15 s means
    # the DAG construction regressed. On a slower day of the same machine: 10.8 s, and 15.5 s
    # while config validation still imported torch (test_config.py checks it no longer does).
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = snakemake(["-n", "--cores", "2"], tmp_path, venv_env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "figure_data_overview" in out.stdout
    assert cpu < 15, f"dry run took {cpu:.1f} s of CPU"


@pytest.mark.parametrize("overlays", [["paper.yaml"], ["paper.yaml", "paper-convnet.yaml"], ["paper.yaml", "paper-vit.yaml"],
                                      ["paper.yaml", "paper-gpt.yaml"]],
                         ids=lambda o: "+".join(o))
def test_dry_run_of_paper_overlays(tmp_path, venv_env, overlays):
    files = [str(ROOT / "config" / name) for name in overlays]
    out = snakemake(["-n", "--cores", "2", "--configfile", *files], tmp_path, venv_env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "train_scaling" in out.stdout


def test_bad_config_stops_before_any_job(tmp_path, venv_env):
    out = snakemake(["-n", "--cores", "1", "--config", "data={split_sed: 1}"], tmp_path, venv_env)
    assert out.returncode != 0
    assert "data: unknown key(s) ['split_sed']" in out.stdout + out.stderr


@pytest.mark.slow
def test_tiny_dag_end_to_end(tmp_path, venv_env):
    from mlflow.tracking import MlflowClient

    args = ["--cores", "2", "--workflow-profile", str(ROOT / "workflow/profiles/local"),
            "--configfile", str(ROOT / "tests/configs/tiny.yaml")]
    out = snakemake(args, tmp_path, venv_env)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    tiny = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    results = tmp_path / "results"
    for dataset in tiny["data"]["datasets"]:
        manifest = json.loads((results / "data" / dataset / "manifest.json").read_text())
        assert manifest["sizes"]["train"] <= 512 or manifest["kind"] == "text"
        assert (results / "figures" / f"data_overview_{dataset}.png").stat().st_size > 10_000
    assert (results / "notebooks/data_overview.ipynb").is_file()
    # The scaling study: every run finished, tables and summary written, figures rendered.
    summary = json.loads((results / "analysis/scaling/summary.json").read_text())
    assert set(summary["lr_shift_octaves"]) == set(tiny["scaling"]["width_sweep"]["parameterizations"])
    assert set(summary["depth_lr_shift_octaves"]) == {"0.5"}
    assert set(summary["sharpness_spread"]) >= {"sp", "mup", "sp_mse", "mup_mse"}
    assert set(summary["lr_shift_octaves_gpt"]) == set(tiny["scaling"]["width_sweep"]["parameterizations"])
    assert set(summary["preconditioned_sharpness_spread_gpt"]) == {"sp", "mup"}
    # The GPT depth sweep: alpha 0 (the standard GPT) and 1/2 (depth-muP), shift and spread.
    assert set(summary["depth_lr_shift_octaves_gpt"]) == {"0", "0.5"}
    assert set(summary["preconditioned_sharpness_spread_depth_gpt"]) == {"0", "0.5"}
    assert summary["lr_shift_octaves"]["mup"]["mean_curve"]["n_seeds"] == 1
    assert (results / "analysis/scaling/summary.md").read_text().startswith("# Scaling study: results")
    for stem in ["scaling_lr_width", "scaling_lr_depth", "scaling_coord_check", "scaling_sharpness_width",
                 "scaling_ntk_width", "scaling_hessian_vs_gn", "scaling_sharpness_spread", "scaling_sharpness_depth",
                 "scaling_lr_gpt", "scaling_sharpness_gpt", "scaling_lr_depth_gpt", "scaling_sharpness_depth_gpt"]:
        assert (results / "figures" / f"{stem}.png").stat().st_size > 5_000, stem
    # The cmd study: trajectories, fits, summary with every key the issue lists, figures.
    cmd = json.loads((results / "analysis/cmd/summary.json").read_text())
    assert set(cmd["test_accuracy"]) == {"sgd", "ema", "swa", "cmd_posthoc", "cmd_online", "p_sgd"}
    assert all(v["mean"] is not None for v in cmd["test_accuracy"].values())
    assert cmd["cmd_minus_sgd_accuracy"]["ci95"] is not None  # paired over the two seeds
    assert cmd["online_vs_posthoc_max_abs_diff"] < 1e-8
    assert set(cmd["reconstruction_error"]) == {"cmd", "pca", "dmd"} and cmd["pca_never_worse_than_cmd"]
    assert set(cmd["embedded"]) == {"0.4"} and set(cmd["modes_needed"]) == {"mup"}
    assert (results / "runs/cmd/mlp-sp-w16-d2-lr0.2-s0/trajectory/weights.f32").is_file()
    for stem in ["cmd_corr", "cmd_error", "cmd_examples", "cmd_accuracy", "cmd_online", "cmd_embedded",
                 "cmd_modes_width"]:
        assert (results / "figures" / f"{stem}.png").stat().st_size > 5_000, stem
    # The mat study: every variant and CV run finished, summary keys as issue 11 lists, figures.
    mat = json.loads((results / "analysis/mat/summary.json").read_text())
    assert set(mat) >= {"lambda_max_cv_across_heads", "flops_to_target", "flops_saved_pct_vs_full",
                        "wall_saved_pct_vs_full", "final_val_loss", "flop_counter_rel_error", "cv_by_param"}
    assert set(mat["lambda_max_cv_across_heads"]) == {"gpt", "vit"}
    assert set(mat["final_val_loss"]) == {"full", "mat", "random", "inverse"}
    assert all(v["mean"] is not None for v in mat["final_val_loss"].values())
    assert mat["flop_counter_rel_error"] < 0.05
    assert set(mat["cv_by_param"]) == {"sp", "mup"} and set(mat["cv_by_param"]["mup"]) == {"16", "32"}
    for stem in ["mat_heads_gpt", "mat_heads_vit", "mat_trajectories_gpt", "mat_trajectories_vit", "mat_cv_width",
                 "mat_savings_gpt", "mat_savings_vit", "mat_savings_table"]:
        assert (results / "figures" / f"{stem}.png").stat().st_size > 5_000, stem
    # The lag study: every run grown from its base, LAG statistics with the keys, figures.
    lag = json.loads((results / "analysis/lag/summary.json").read_text())
    lags = [str(k) for k in sorted({*tiny["lag"]["lags"], tiny["lag"]["grow"]["steps"]})]
    for key in ("spearman_by_lag", "kendall_by_lag", "regret_by_lag", "top1_by_lag"):
        assert list(lag[key]) == lags and lag[key]["0"]["n"] == len(tiny["lag"]["seeds"]), key
    assert set(lag["spearman_by_lag_by_param"]) == {"sp", "mup-a0.5"} and set(lag["lag_at_threshold"]) == {"sp", "mup-a0.5"}
    assert set(lag["final_loss"]) == set(tiny["lag"]["grow"]["strategies"])
    assert lag["strategy_spread_over_seed_sd"]["sp"]["seed_sd"] is not None
    assert set(lag["adaptive_vs_fixed"]) == {"adaptive", "stack_top", "stack_middle", "stack_scratch", "stack_top_pc",
                                             "stack_middle_pc", "stack_scratch_pc"}
    assert lag["n_diverged"] == 0
    import pandas as pd

    lag_growth = pd.read_parquet(results / "analysis/lag/growth.parquet")
    assert lag_growth["chosen"].notna().sum() == tiny["lag"]["adaptive"]["end_depth"] - tiny["lag"]["adaptive"]["start_depth"]
    for stem in ["lag_curves", "lag_init_vs_final", "lag_lk_vs_final", "lag_rho", "lag_selection", "lag_final_table",
                 "lag_rho_by_param", "lag_stacking"]:
        assert (results / "figures" / f"{stem}.png").stat().st_size > 5_000, stem
    # Every job is an MLflow child run of this invocation, FINISHED.
    client = MlflowClient(f"sqlite:///{results}/mlflow.db")
    exp = client.get_experiment_by_name("traindyn")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("traindyn.kind") == "invocation"]
    jobs = [r for r in runs if r.data.tags.get("traindyn.kind") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in jobs)
    stages = sorted(r.data.tags["stage"] for r in jobs)
    assert stages.count("data") == len(tiny["data"]["datasets"])
    assert stages.count("figure") == len(list((results / "notebooks").glob("*.ipynb")))
    # Each figure job carries exactly the figures its notebook wrote.
    logged = sorted(a.path.split("/")[-1] for r in jobs if r.data.tags["stage"] == "figure"
                    for a in client.list_artifacts(r.info.run_id, "figures"))
    assert logged == sorted(p.name for p in (results / "figures").glob("*.png"))
    # Training runs were recorded by their jobs and imported by the study's track job, once each.
    for study in ("scaling", "mat", "lag", "cmd"):
        runs_dir = results / "runs" / study
        train = [r for r in jobs if r.data.tags["stage"] == "train" and r.data.tags.get("wildcard.study") == study]
        assert len(train) == len(list(runs_dir.iterdir()))
        assert {r.data.tags["run_id"] for r in train} == {d.name for d in runs_dir.iterdir()}
    # The cmd study's cmdfit jobs were deferred too and imported by its track job, once each.
    fits = [r.data.tags["run_id"] for r in jobs if r.data.tags["stage"] == "cmdfit"]
    assert sorted(fits) == sorted(d.name for d in (results / "runs/cmd").iterdir())
    # A second invocation finds nothing to do.
    start = time.perf_counter()
    again = snakemake(args, tmp_path, venv_env)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    # 3 s on an idle 2-core machine; the bound leaves room for a loaded CI machine.
    assert time.perf_counter() - start < 20
    # The HTML report holds every figure with its caption.
    report = snakemake([*args, "--report", "results/report.html"], tmp_path, venv_env)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert (results / "report.html").stat().st_size > 100_000
    # Every caption renders cleanly (docutils prints "(ERROR/3) ..." and goes on otherwise).
    for level in ("(WARNING/", "(ERROR/", "(SEVERE/"):
        assert level not in report.stdout + report.stderr, (report.stdout + report.stderr)[-3000:]
    # Every figure drawn is in docs/figures.md, with its caption.
    from traindyn.report.docs import documented_figures

    patterns = [re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(n))) for n in documented_figures(ROOT)]
    for png in (results / "figures").glob("*.png"):
        assert any(p.fullmatch(png.stem) for p in patterns), f"{png.stem} is not in docs/figures.md"
    # Each study's summary.md, and `traindyn report` turns the summaries into the docs pages.
    for study, title in (("scaling", "# Scaling study"), ("mat", "# mat study"), ("cmd", "# cmd study"),
                         ("lag", "# lag study")):  # fmt: skip
        text = (results / "analysis" / study / "summary.md").read_text()
        assert text.startswith(title) and "## Findings" in text and "written at commit" in text, study
    site = tmp_path / "site"
    for rel in ("README.md", "docs", "workflow/report"):
        src = ROOT / rel
        shutil.copytree(src, site / rel) if src.is_dir() else (site.mkdir(), shutil.copyfile(src, site / rel))
    exe = shutil.which("traindyn", path=venv_env["PATH"])
    out = subprocess.run([exe, "report", "--results", str(results), "--root", str(site)], cwd=tmp_path,
                         env=venv_env, capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    for study in ("scaling", "mat", "cmd", "lag"):
        assert (site / f"docs/results/{study}.md").read_text() == (results / "analysis" / study / "summary.md").read_text()
    assert "not measured yet" not in (site / "README.md").read_text()
