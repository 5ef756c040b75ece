# Data stage: one job per dataset -> results/data/{dataset}/ (tensors, manifest, tables).
DATASETS = config["data"]["datasets"]


# Prepare one dataset: deterministic splits, manifest.json with checksums, overview tables.
rule data:
    input:
        config=ancient(RESOLVED_CONFIG),
    output:
        dir=directory("results/data/{dataset}"),
    log:
        log_of("data", "{dataset}"),
    wildcard_constraints:
        dataset="|".join(DATASETS),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        data=config["data"],
    shell:
        "traindyn data --config {input.config} --dataset {wildcards.dataset} --out {output.dir} > {log} 2>&1"
