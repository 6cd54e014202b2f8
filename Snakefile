# testtime workflow: test-time fine-tuning with SIFT data selection.
#   snakemake --cores all                                   offline demo (config/config.yaml)
#   snakemake --cores all --configfile config/paper.yaml --profile workflow/profiles/slurm
# All workflow-side Python lives in workflow/rules/common.smk; each rule calls the testtime CLI.


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/index.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        REPORT_OUTPUTS,
