# Deferred tracking: each study's training (and cmdfit) jobs write their MLflow run to
# tracking.json in the run folder; one job per study imports them into the store. It needs
# only the runs, so it runs beside the study's aggregation and figures, not before them.
TRACKED_STUDIES = [study for study, outputs in TRACKED.items() if outputs]


rule track:
    input:
        config=ancient(RESOLVED_CONFIG),
        runs=lambda wildcards: TRACKED[wildcards.study],
    output:
        done="results/tracking/{study}.json",
    log:
        log_of("track", "{study}"),
    wildcard_constraints:
        study=one_of(TRACKED_STUDIES),
    conda:
        ENV
    threads: 1
    shell:
        "traindyn track --config {input.config} --study {wildcards.study} --out {output.done} > {log} 2>&1"


ALL_TRACKING = expand(rules.track.output.done, study=TRACKED_STUDIES)
