# traindyn: `snakemake --cores all` rebuilds every figure from real data.
# The rules live in workflow/rules/ (one file per stage); config.yaml holds the CPU-scale
# experiment matrix, validated against workflow/schemas/config.schema.yaml before any job.
import os


configfile: os.path.join(workflow.basedir, "config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/scaling.smk"
include: "workflow/rules/figures.smk"
# Each further study: its rules (train, analysis, figures) in one file, extending ALL_FIGURES.
include: "workflow/rules/lag.smk"
include: "workflow/rules/mat.smk"
include: "workflow/rules/cmd.smk"
include: "workflow/rules/tracking.smk"


# Every figure the pipeline knows, and every job's MLflow record in the store.
rule all:
    default_target: True
    input:
        ALL_FIGURES,
        ALL_TRACKING,
