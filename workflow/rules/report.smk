# Stage report: the paper's bits-per-byte table and figures, plus DVC metrics and plot data.
# The rule's output is the one list of report files: the shell passes each to its flag, and
# REPORT_OUTPUTS (targets of `all` and stage_report) is read from it.


rule report:
    input:
        per_prompt=rules.aggregate.output.per_prompt,
        selections=sift_selections,
    output:
        **LAMBDA_SWEEP_OUTPUT,
        **MEMORY_CURVE_OUTPUT,
        bpb=report(
            f"{RESULTS}/bpb.csv",
            caption="../report/bpb.rst",
            category="Tables",
            labels={"name": "bpb.csv"},
        ),
        metrics=f"{RESULTS}/metrics.json",
        uncertainty=f"{RESULTS}/uncertainty.csv",
        bpb_vs_steps=f"{RESULTS}/bpb_vs_steps.csv",
        table_md=report(
            f"{FIGURES}/bpb_table.md",
            caption="../report/bpb.rst",
            category="Tables",
            labels={"name": "bpb table (markdown)"},
        ),
        table_tex=f"{FIGURES}/bpb_table.tex",
        uncertainty_png=report(
            f"{FIGURES}/uncertainty_vs_error.png",
            caption="../report/uncertainty.rst",
            category="Figures",
            labels={"name": "uncertainty vs error"},
        ),
        uncertainty_pdf=f"{FIGURES}/uncertainty_vs_error.pdf",
        steps_png=report(
            f"{FIGURES}/bpb_vs_steps.png",
            caption="../report/steps.rst",
            category="Figures",
            labels={"name": "bpb vs steps"},
        ),
        steps_pdf=f"{FIGURES}/bpb_vs_steps.pdf",
        adaptive_png=report(
            f"{FIGURES}/adaptive_compute.png",
            caption="../report/adaptive.rst",
            category="Figures",
            labels={"name": "adaptive compute"},
        ),
        adaptive_pdf=f"{FIGURES}/adaptive_compute.pdf",
        uncertainty_gain_png=report(
            f"{FIGURES}/uncertainty_gain.png",
            caption="../report/uncertainty_gain.rst",
            category="Figures",
            labels={"name": "uncertainty vs gain"},
        ),
        uncertainty_gain_pdf=f"{FIGURES}/uncertainty_gain.pdf",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: 1
    params:
        config=job_config("seed", "report", "select"),
        optional_outputs=optional_report_flags,
    shell:
        "testtime report --config-json {params.config:q} --per-prompt {input.per_prompt:q}"
        " --selections {input.selections:q} --bpb-csv {output.bpb:q}"
        " --metrics {output.metrics:q} --uncertainty-csv {output.uncertainty:q}"
        " --bpb-vs-steps-csv {output.bpb_vs_steps:q} --table-md {output.table_md:q}"
        " --table-tex {output.table_tex:q}"
        " --uncertainty-plot {output.uncertainty_png:q} {output.uncertainty_pdf:q}"
        " --steps-plot {output.steps_png:q} {output.steps_pdf:q}"
        " --adaptive-plot {output.adaptive_png:q} {output.adaptive_pdf:q}"
        " --uncertainty-gain-plot {output.uncertainty_gain_png:q} {output.uncertainty_gain_pdf:q}"
        " {params.optional_outputs} > {log:q} 2>&1"


REPORT_OUTPUTS = [str(path) for path in rules.report.output]


# Stage target (dvc.yaml runs one stage at a time through these).
rule stage_report:
    input:
        REPORT_OUTPUTS,
    localrule: True
