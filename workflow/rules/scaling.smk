# Scaling study: one job per run (width x LR x parameterization x seed, and depth x LR x
# alpha x seed), then aggregation into results/analysis/scaling/ and the coordinate check.
from traindyn.studies import study_runs

SCALING_SPECS = study_runs(config, "scaling")
SCALING_RUNS = list(SCALING_SPECS)


# Train one run of the scaling study, named by its grid point (e.g. mup-w128-d2-lr1-s0).
rule train_scaling:
    input:
        config=ancient(RESOLVED_CONFIG),
        data=lambda wildcards: f"results/data/{SCALING_SPECS[wildcards.run].dataset}",
    output:
        final="results/runs/scaling/{run}/final.json",
        metrics="results/runs/scaling/{run}/metrics.parquet",
    log:
        log_of("train/scaling", "{run}"),
    wildcard_constraints:
        run=one_of(SCALING_RUNS),
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
        spec=lambda wildcards: SCALING_SPECS[wildcards.run].to_dict(),
    shell:
        "traindyn train --config {input.config} --threads {threads} "
        "--study scaling --run {wildcards.run} --out {params.run_dir} > {log} 2>&1"


# Every run -> runs.parquet, curves.parquet, lr_transfer.parquet and summary.json.
rule aggregate_scaling:
    input:
        config=ancient(RESOLVED_CONFIG),
        finals=expand(rules.train_scaling.output.final, run=SCALING_RUNS),
    output:
        runs="results/analysis/scaling/runs.parquet",
        curves="results/analysis/scaling/curves.parquet",
        transfer="results/analysis/scaling/lr_transfer.parquet",
        spectra="results/analysis/scaling/spectra.parquet",
        summary="results/analysis/scaling/summary.json",
        tables="results/analysis/scaling/summary.md",
    log:
        log_of("aggregate", "scaling"),
    conda:
        ENV
    threads: 1
    params:
        specs={run: spec.to_dict() for run, spec in SCALING_SPECS.items()},
    shell:
        "traindyn aggregate --config {input.config} --study scaling > {log} 2>&1"


# Their MLflow records (workflow/rules/tracking.smk).
TRACKED["scaling"] = expand(rules.train_scaling.output.final, run=SCALING_RUNS)


# Activation size and its change after a few steps across widths (mup-style check).
rule coordcheck_scaling:
    input:
        config=ancient(RESOLVED_CONFIG),
        data=f"results/data/{config['scaling']['dataset']}",
    output:
        table="results/analysis/scaling/coord_check.parquet",
    log:
        log_of("coordcheck", "scaling"),
    conda:
        ENV
    threads: 1
    params:
        coord_check=config["scaling"]["coord_check"],
    shell:
        "traindyn coordcheck --config {input.config} --out {output.table} > {log} 2>&1"
