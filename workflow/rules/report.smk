# Stage report: the paper's bits-per-byte table and figures, plus DVC metrics and plot data.
# The rule's outputs are testtime.report.outputs.report_outputs(config) (common.smk): the shell
# passes each to its flag (report_argv), and REPORT_OUTPUTS (targets of `all` and stage_report)
# is read from the rule.


rule report:
    input:
        per_prompt=rules.aggregate.output.per_prompt,
        selections=sift_selections,
    output:
        **report_rule_outputs(),
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: 1
    params:
        config=job_config("seed", "report", "select"),
        outputs=report_output_flags,
    shell:
        "testtime report --config-json {params.config:q} --per-prompt {input.per_prompt:q}"
        " --selections {input.selections:q} {params.outputs} > {log:q} 2>&1"


REPORT_OUTPUTS = [str(path) for path in rules.report.output]


# Stage target (dvc.yaml runs one stage at a time through these).
rule stage_report:
    input:
        REPORT_OUTPUTS,
    localrule: True
