# Mat study: one job per (model, variant, seed) run and per CV run; aggregation into
# results/analysis/mat/; figures of heads' lambda_max and of MAT's compute savings.
from traindyn.studies import study_runs

MAT_SPECS = study_runs(config, "mat")
MAT_RUNS = list(MAT_SPECS)

# Each run's inputs: its dataset and, for random gating, the MAT run whose active counts it matches.
MAT_INPUTS = {
    run: {"data": f"results/data/{spec.dataset}"}
    | ({"match": spec.extra["mat"]["match"]} if spec.extra["mat"]["match"] else {})
    for run, spec in MAT_SPECS.items()
}


# Train one run of the mat study, named by its grid point (e.g. gpt-mat-s0, cv-gpt-mup-w64-s1).
rule train_mat:
    input:
        unpack(lambda wildcards: MAT_INPUTS[wildcards.run]),
        config=ancient(RESOLVED_CONFIG),
    output:
        final="results/runs/mat/{run}/final.json",
        metrics="results/runs/mat/{run}/metrics.parquet",
        lambdas="results/runs/mat/{run}/mat_lambda.parquet",
        steps="results/runs/mat/{run}/mat_steps.parquet",
    log:
        log_of("train/mat", "{run}"),
    wildcard_constraints:
        run=one_of(MAT_RUNS),
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
        spec=lambda wildcards: MAT_SPECS[wildcards.run].to_dict(),
    shell:
        "traindyn train --config {input.config} --threads {threads} "
        "--study mat --run {wildcards.run} --out {params.run_dir} > {log} 2>&1"


# Every run -> runs, curves, lambda, cv and to_target parquet and summary.json.
rule aggregate_mat:
    input:
        config=ancient(RESOLVED_CONFIG),
        finals=expand(rules.train_mat.output.final, run=MAT_RUNS),
    output:
        runs="results/analysis/mat/runs.parquet",
        curves="results/analysis/mat/curves.parquet",
        lambdas="results/analysis/mat/lambda.parquet",
        cv="results/analysis/mat/cv.parquet",
        to_target="results/analysis/mat/to_target.parquet",
        summary="results/analysis/mat/summary.json",
    log:
        log_of("aggregate", "mat"),
    conda:
        ENV
    threads: 1
    params:
        specs={run: spec.to_dict() for run, spec in MAT_SPECS.items()},
        target=config["mat"]["target"],
    shell:
        "traindyn aggregate --config {input.config} --study mat > {log} 2>&1"


# Their MLflow records (workflow/rules/tracking.smk).
TRACKED["mat"] = expand(rules.train_mat.output.final, run=MAT_RUNS)


MAT_HEAD_FIGURES = [
    f"mat_heads_{m}" for m, mc in config["mat"]["models"].items() if mc["enabled"]
] + [
    f"mat_trajectories_{m}"
    for m, mc in config["mat"]["models"].items()
    if mc["enabled"]
]
if config["mat"]["cv"]["enabled"] and config["mat"]["models"]["gpt"]["enabled"]:
    MAT_HEAD_FIGURES.append("mat_cv_width")


# Mat: layer x head heatmaps, per-head lambda_max trajectories with the gate, CV vs width.
rule figure_mat_heads:
    input:
        config=ancient(RESOLVED_CONFIG),
        lambdas=rules.aggregate_mat.output.lambdas,
        cv=rules.aggregate_mat.output.cv,
        summary=rules.aggregate_mat.output.summary,
        notebook=notebook("mat_heads"),
    output:
        figures=report(
            [
                f
                for s in MAT_HEAD_FIGURES
                for f in figure_files(s)
                if f.endswith(".png")
            ],
            caption="../report/mat_heads.rst",
            category="MAT",
        ),
        other=[
            f
            for s in MAT_HEAD_FIGURES
            for f in figure_files(s)
            if not f.endswith(".png")
        ],
        notebook="results/notebooks/mat_heads.ipynb",
    log:
        log_of("figure", "mat_heads"),
    conda:
        ENV
    threads: 1
    params:
        figures=config["figures"],
    shell:
        "traindyn figure --config {input.config} {input.notebook} --executed {output.notebook} "
        "-p analysis_dir=results/analysis/mat > {log} 2>&1"


MAT_SAVING_FIGURES = ["mat_savings_table"] + [
    f"mat_savings_{m}" for m, mc in config["mat"]["models"].items() if mc["enabled"]
]


# Mat: validation loss vs cumulative FLOPs and wall time per variant; cost-to-target table.
rule figure_mat_savings:
    input:
        config=ancient(RESOLVED_CONFIG),
        runs=rules.aggregate_mat.output.runs,
        curves=rules.aggregate_mat.output.curves,
        to_target=rules.aggregate_mat.output.to_target,
        summary=rules.aggregate_mat.output.summary,
        notebook=notebook("mat_savings"),
    output:
        figures=report(
            [
                f
                for s in MAT_SAVING_FIGURES
                for f in figure_files(s)
                if f.endswith(".png")
            ],
            caption="../report/mat_savings.rst",
            category="MAT",
        ),
        other=[
            f
            for s in MAT_SAVING_FIGURES
            for f in figure_files(s)
            if not f.endswith(".png")
        ],
        notebook="results/notebooks/mat_savings.ipynb",
    log:
        log_of("figure", "mat_savings"),
    conda:
        ENV
    threads: 1
    params:
        figures=config["figures"],
    shell:
        "traindyn figure --config {input.config} {input.notebook} --executed {output.notebook} "
        "-p analysis_dir=results/analysis/mat > {log} 2>&1"


if config["mat"]["enabled"]:
    ALL_FIGURES += rules.figure_mat_heads.output
    ALL_FIGURES += rules.figure_mat_savings.output
