# Lag study (docs/methods.md, lag study): one job per run. A grown run reads its base run's
# weights.pt; an adaptive-stacking stage also reads its probes' results (the choice is made
# when the stage starts). Then aggregation into results/analysis/lag/ and the figures.
from traindyn.grow.grid import dependencies
from traindyn.studies import study_runs

LAG_SPECS = study_runs(config, "lag")
LAG_RUNS = list(LAG_SPECS)


# What each run reads: its base's weights.pt and, for an adaptive stage, its probes' final.json.
LAG_INPUTS = {
    run: [
        f"results/runs/lag/{dep}/{'final.json' if i else 'weights.pt'}"
        for i, dep in enumerate(dependencies(spec))
    ]
    for run, spec in LAG_SPECS.items()
}


# Train one lag run: a base (sp-base-d3-s0), a grown strategy (sp-stack-d6-s0), a probe or a stage.
rule train_lag:
    input:
        config=ancient(RESOLVED_CONFIG),
        data=f"results/data/{config['lag']['dataset']}",
        upstream=lambda wildcards: LAG_INPUTS[wildcards.run],
    output:
        final="results/runs/lag/{run}/final.json",
        metrics="results/runs/lag/{run}/metrics.parquet",
        weights="results/runs/lag/{run}/weights.pt",
    log:
        log_of("train/lag", "{run}"),
    wildcard_constraints:
        run=one_of(LAG_RUNS),
    group:
        "train"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
        gpu=config["resources"]["train_gpus"],
    params:
        run_dir=subpath(output.final, parent=True),
        # the run's own spec: a config change reruns exactly the runs it changes
        spec=lambda wildcards: LAG_SPECS[wildcards.run].to_dict(),
    shell:
        "traindyn train --config {input.config} --threads {threads} "
        "--study lag --run {wildcards.run} --out {params.run_dir} > {log} 2>&1"


# Every run -> rank statistics of l(k) vs l(T), stacking comparison, tables and summary.json.
rule aggregate_lag:
    input:
        config=ancient(RESOLVED_CONFIG),
        finals=expand(rules.train_lag.output.final, run=LAG_RUNS),
    output:
        runs="results/analysis/lag/runs.parquet",
        lag="results/analysis/lag/lag.parquet",
        curves="results/analysis/lag/curves.parquet",
        growth="results/analysis/lag/growth.parquet",
        correlations="results/analysis/lag/correlations.parquet",
        lag_summary="results/analysis/lag/lag_summary.parquet",
        final_loss="results/analysis/lag/final_loss.parquet",
        base_plateau="results/analysis/lag/base_plateau.parquet",
        lr_sweep="results/analysis/lag/lr_sweep.parquet",
        summary="results/analysis/lag/summary.json",
    log:
        log_of("aggregate", "lag"),
    conda:
        ENV
    threads: 1
    params:
        analysis=config["lag"]["analysis"],
        specs={run: spec.to_dict() for run, spec in LAG_SPECS.items()},
    shell:
        "traindyn aggregate --config {input.config} --study lag > {log} 2>&1"


# Their MLflow records (workflow/rules/tracking.smk).
TRACKED["lag"] = expand(rules.train_lag.output.final, run=LAG_RUNS)


LAG_FIGURES = [
    "lag_curves",
    "lag_init_vs_final",
    "lag_lk_vs_final",
    "lag_rho",
    "lag_selection",
    "lag_final_table",
]
# rho(k) by parameterization and the post-growth LR sweep
if config["lag"]["depth_mup"]["enabled"] or config["lag"]["lr_sweep"]["enabled"]:
    LAG_FIGURES.append("lag_rho_by_param")
if config["lag"]["adaptive"]["enabled"]:
    LAG_FIGURES.append("lag_stacking")


# Lag: curves after growth, l(0) and l(k) vs l(T), rho/tau(k), top-1/regret, table, stacking.
rule figure_lag:
    input:
        config=ancient(RESOLVED_CONFIG),
        tables=rules.aggregate_lag.output,
        notebook=notebook("lag_growth"),
    output:
        figures=report(
            [f for s in LAG_FIGURES for f in figure_files(s) if f.endswith(".png")],
            caption="../report/lag_growth.rst",
            category="Lag",
        ),
        other=[
            f for s in LAG_FIGURES for f in figure_files(s) if not f.endswith(".png")
        ],
        notebook="results/notebooks/lag_growth.ipynb",
    log:
        log_of("figure", "lag_growth"),
    conda:
        ENV
    threads: 1
    params:
        figures=config["figures"],
    shell:
        "traindyn figure --config {input.config} {input.notebook} --executed {output.notebook} "
        "-p analysis_dir=results/analysis/lag > {log} 2>&1"


if config["lag"]["enabled"]:
    ALL_FIGURES += rules.figure_lag.output
