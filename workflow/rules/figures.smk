# Figure stage: papermill executes a notebook per figure group on tables the pipeline wrote.
DATA_FIGURES = ["data_overview_splits"] + [f"data_overview_{d}" for d in DATASETS]


# Dataset overview: samples or text excerpt, class/character frequencies, split sizes.
rule figure_data_overview:
    input:
        config=ancient(RESOLVED_CONFIG),
        data=expand(rules.data.output.dir, dataset=DATASETS),
        notebook=notebook("data_overview"),
    output:
        figures=report(
            [
                f
                for stem in DATA_FIGURES
                for f in figure_files(stem)
                if f.endswith(".png")
            ],
            caption="../report/data_overview.rst",
            category="Data",
        ),
        other=[
            f
            for stem in DATA_FIGURES
            for f in figure_files(stem)
            if not f.endswith(".png")
        ],
        notebook="results/notebooks/data_overview.ipynb",
    log:
        log_of("figure", "data_overview"),
    conda:
        ENV
    threads: 1
    params:
        figures=config["figures"],
        data_dirs=lambda wildcards, input: "[" + ", ".join(input.data) + "]",
    shell:
        "traindyn figure --config {input.config} {input.notebook} --executed {output.notebook} "
        "-p 'data_dirs={params.data_dirs}' > {log} 2>&1"


SCALING_FIGURES = ["scaling_coord_check"]
if config["scaling"]["width_sweep"]["enabled"]:
    SCALING_FIGURES.append("scaling_lr_width")
if config["scaling"]["depth_sweep"]["enabled"]:
    SCALING_FIGURES.append("scaling_lr_depth")
if config["scaling"]["gpt_sweep"]["enabled"]:
    SCALING_FIGURES.append("scaling_lr_gpt")
    if config["scaling"]["gpt_sweep"]["depth_sweep"]["enabled"]:
        SCALING_FIGURES.append("scaling_lr_depth_gpt")


# Scaling: loss vs LR per width (SP | NTK | muP) and per depth (alpha), coordinate check.
rule figure_scaling_lr:
    input:
        config=ancient(RESOLVED_CONFIG),
        runs=rules.aggregate_scaling.output.runs,
        transfer=rules.aggregate_scaling.output.transfer,
        summary=rules.aggregate_scaling.output.summary,
        coord_check=rules.coordcheck_scaling.output.table,
        notebook=notebook("scaling_lr"),
    output:
        figures=report(
            [
                f
                for s in SCALING_FIGURES
                for f in figure_files(s)
                if f.endswith(".png")
            ],
            caption="../report/scaling_lr.rst",
            category="Scaling",
        ),
        other=[
            f
            for s in SCALING_FIGURES
            for f in figure_files(s)
            if not f.endswith(".png")
        ],
        notebook="results/notebooks/scaling_lr.ipynb",
    log:
        log_of("figure", "scaling_lr"),
    conda:
        ENV
    threads: 1
    params:
        figures=config["figures"],
    shell:
        "traindyn figure --config {input.config} {input.notebook} --executed {output.notebook} "
        "-p analysis_dir=results/analysis/scaling > {log} 2>&1"


SHARPNESS_FIGURES = [
    "scaling_sharpness_width",
    "scaling_ntk_width",
    "scaling_hessian_vs_gn",
    "scaling_sharpness_spread",
]
if (
    config["scaling"]["depth_sweep"]["enabled"]
    and config["scaling"]["sharpness"]["depth_alphas"]
):
    SHARPNESS_FIGURES.append("scaling_sharpness_depth")
if (
    config["scaling"]["gpt_sweep"]["enabled"]
    and config["scaling"]["gpt_sweep"]["sharpness"]["enabled"]
):
    SHARPNESS_FIGURES.append("scaling_sharpness_gpt")
    if config["scaling"]["gpt_sweep"]["depth_sweep"]["enabled"]:
        SHARPNESS_FIGURES.append("scaling_sharpness_depth_gpt")


# Scaling: sharpness (base-LR units) per width and depth, NTK and Gauss-Newton eigenvalues.
rule figure_scaling_sharpness:
    input:
        config=ancient(RESOLVED_CONFIG),
        spectra=rules.aggregate_scaling.output.spectra,
        summary=rules.aggregate_scaling.output.summary,
        notebook=notebook("scaling_sharpness"),
    output:
        figures=report(
            [
                f
                for s in SHARPNESS_FIGURES
                for f in figure_files(s)
                if f.endswith(".png")
            ],
            caption="../report/scaling_sharpness.rst",
            category="Scaling",
        ),
        other=[
            f
            for s in SHARPNESS_FIGURES
            for f in figure_files(s)
            if not f.endswith(".png")
        ],
        notebook="results/notebooks/scaling_sharpness.ipynb",
    log:
        log_of("figure", "scaling_sharpness"),
    conda:
        ENV
    threads: 1
    params:
        figures=config["figures"],
    shell:
        "traindyn figure --config {input.config} {input.notebook} --executed {output.notebook} "
        "-p analysis_dir=results/analysis/scaling > {log} 2>&1"


ALL_FIGURES = [*rules.figure_data_overview.output]
if config["scaling"]["enabled"]:
    ALL_FIGURES += rules.figure_scaling_lr.output
if config["scaling"]["enabled"] and config["scaling"]["sharpness"]["enabled"]:
    ALL_FIGURES += rules.figure_scaling_sharpness.output
