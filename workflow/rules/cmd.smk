# CMD study: one job per run (trajectory + online / embedded CMD or P-SGD), one fit per run
# (post-hoc CMD vs PCA / DMD, weights evaluated on val and test), aggregation, figures.
from traindyn.studies import study_runs

CMD_SPECS = study_runs(config, "cmd")
CMD_RUNS = list(CMD_SPECS)
CMD_FIT_KEYS = [
    "k",
    "modes",
    "modes_sweep",
    "warmup",
    "ema_decay",
    "swa_start",
    "eval_examples",
]


# Train one run of the cmd study with its trajectory (e.g. mlp-sp-w128-d2-lr0.1-s0-psgd).
rule train_cmd:
    input:
        config=ancient(RESOLVED_CONFIG),
        data=lambda wildcards: f"results/data/{CMD_SPECS[wildcards.run].dataset}",
    output:
        final="results/runs/cmd/{run}/final.json",
        metrics="results/runs/cmd/{run}/metrics.parquet",
    log:
        log_of("train/cmd", "{run}"),
    wildcard_constraints:
        run=one_of(CMD_RUNS),
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
        spec=lambda wildcards: CMD_SPECS[wildcards.run].to_dict(),
    shell:
        "traindyn train --config {input.config} --threads {threads} "
        "--study cmd --run {wildcards.run} --out {params.run_dir} --no-progress > {log} 2>&1"


# Fit CMD / PCA / DMD to one run's trajectory; evaluate SGD, EMA, SWA and CMD weights.
rule fit_cmd:
    input:
        config=ancient(RESOLVED_CONFIG),
        final=rules.train_cmd.output.final,
        data=lambda wildcards: f"results/data/{CMD_SPECS[wildcards.run].dataset}",
    output:
        fit="results/runs/cmd/{run}/cmdfit.json",
    log:
        log_of("cmdfit", "{run}"),
    wildcard_constraints:
        run=one_of(CMD_RUNS),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        run_dir=subpath(output.fit, parent=True),
        spec=lambda wildcards: CMD_SPECS[wildcards.run].to_dict(),
        # what the fit reads: a change of the aggregation's keys reruns only the aggregation
        cmd={k: config["cmd"][k] for k in CMD_FIT_KEYS},
    shell:
        "traindyn cmdfit --config {input.config} --threads {threads} "
        "--run {wildcards.run} --run-dir {params.run_dir} > {log} 2>&1"


# Every fit -> runs / errors / examples / corr / online / modes parquet and summary.json.
rule aggregate_cmd:
    input:
        config=ancient(RESOLVED_CONFIG),
        fits=expand(rules.fit_cmd.output.fit, run=CMD_RUNS),
    output:
        runs="results/analysis/cmd/runs.parquet",
        errors="results/analysis/cmd/errors.parquet",
        examples="results/analysis/cmd/examples.parquet",
        corr="results/analysis/cmd/corr.parquet",
        online="results/analysis/cmd/online.parquet",
        modes="results/analysis/cmd/modes.parquet",
        summary="results/analysis/cmd/summary.json",
    log:
        log_of("aggregate", "cmd"),
    conda:
        ENV
    threads: 1
    params:
        specs={run: spec.to_dict() for run, spec in CMD_SPECS.items()},
        cmd={k: config["cmd"][k] for k in ("error_threshold", "modes", "primary")},
    shell:
        "traindyn aggregate --config {input.config} --study cmd > {log} 2>&1"


# Their MLflow records (workflow/rules/tracking.smk).
TRACKED["cmd"] = expand(rules.fit_cmd.output.fit, run=CMD_RUNS)


CMD_FIGURES = [
    "cmd_corr",
    "cmd_error",
    "cmd_examples",
    "cmd_accuracy",
    "cmd_online",
]
if any(m["enabled"] and m["embedded"] for m in config["cmd"]["models"].values()) and (
    config["cmd"]["embedded_fractions"]
):
    CMD_FIGURES.append("cmd_embedded")
if config["cmd"]["width_sweep"]["enabled"]:
    CMD_FIGURES.append("cmd_modes_width")


# CMD: |corr| blocks, error vs M (CMD / PCA / DMD), weights, accuracy table, online, embedded, widths.
rule figure_cmd:
    input:
        config=ancient(RESOLVED_CONFIG),
        tables=rules.aggregate_cmd.output,
        notebook=notebook("cmd_figures"),
    output:
        figures=report(
            [f for s in CMD_FIGURES for f in figure_files(s) if f.endswith(".png")],
            caption="../report/cmd_figures.rst",
            category="CMD",
        ),
        other=[
            f for s in CMD_FIGURES for f in figure_files(s) if not f.endswith(".png")
        ],
        notebook="results/notebooks/cmd_figures.ipynb",
    log:
        log_of("figure", "cmd_figures"),
    conda:
        ENV
    threads: 1
    params:
        figures=config["figures"],
    shell:
        "traindyn figure --config {input.config} {input.notebook} --executed {output.notebook} "
        "-p analysis_dir=results/analysis/cmd > {log} 2>&1"


if config["cmd"]["enabled"]:
    ALL_FIGURES += rules.figure_cmd.output
