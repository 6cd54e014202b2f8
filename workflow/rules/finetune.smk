# Stage finetune: per method and prompt shard, test-time fine-tuning + bits-per-byte evaluation.


# Zero steps: the base model's bpb, computed once and shared by every method.
rule finetune_base:
    input:
        model=rules.pretrain.output.model,
        prompts=rules.chunk.output.prompts,
        memory=rules.chunk.output.memory,
    output:
        results=f"{DATA}/finetune/base/shard-{{shard}}.parquet",
    log:
        f"{LOGS}/finetune.base.{{shard}}.log",
    benchmark:
        f"{BENCH}/finetune.base.{{shard}}.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: 1
    resources:
        gpu=1 if USES_GPU else 0,
        mem_mb=4000,
    params:
        config=variant_config("finetune", "base"),
        num_shards=len(PROMPT_SHARDS),
    shell:
        "OMP_NUM_THREADS={threads} testtime finetune --config-json {params.config:q} --method base"
        " --shard {wildcards.shard} --num-shards {params.num_shards}"
        " --model {input.model:q} --prompts {input.prompts:q} --memory {input.memory:q}"
        " --out {output.results:q} > {log:q} 2>&1"


rule finetune:
    input:
        model=rules.pretrain.output.model,
        prompts=rules.chunk.output.prompts,
        memory=rules.chunk.output.memory,
        selection=rules.select.output.selection,
    output:
        results=f"{DATA}/finetune/{{method}}/shard-{{shard}}.parquet",
    log:
        f"{LOGS}/finetune.{{method}}.{{shard}}.log",
    benchmark:
        f"{BENCH}/finetune.{{method}}.{{shard}}.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: 1
    resources:
        gpu=1 if USES_GPU else 0,
        mem_mb=4000,
    params:
        config=variant_config("finetune"),
        num_shards=len(PROMPT_SHARDS),
    shell:
        "OMP_NUM_THREADS={threads} testtime finetune --config-json {params.config:q}"
        " --method {wildcards.method} --shard {wildcards.shard} --num-shards {params.num_shards}"
        " --model {input.model:q} --prompts {input.prompts:q} --memory {input.memory:q}"
        " --selection {input.selection:q} --out {output.results:q} > {log:q} 2>&1"


rule aggregate:
    input:
        shards=finetune_shards,
        prompts=rules.chunk.output.prompts,
    output:
        per_prompt=f"{RESULTS}/per_prompt.parquet",
    log:
        f"{LOGS}/aggregate.log",
    benchmark:
        f"{BENCH}/aggregate.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: 1
    params:
        config=job_config("seed", "select"),
    shell:
        "testtime aggregate --config-json {params.config:q} --inputs {input.shards:q}"
        " --prompts {input.prompts:q} --out {output.per_prompt:q} > {log:q} 2>&1"


# Stage target (dvc.yaml runs one stage at a time through these).
rule stage_finetune:
    input:
        rules.aggregate.output,
    localrule: True
