# Stage embed: frozen embedding model phi over memory (sharded) and prompts, unit-norm fp16.


rule embed_memory:
    input:
        memory=rules.chunk.output.memory,
    output:
        embeddings=f"{DATA}/embeddings/memory.{{shard}}.npy",
        ids=f"{DATA}/embeddings/memory.{{shard}}.ids.npy",
    log:
        f"{LOGS}/embed_memory.{{shard}}.log",
    benchmark:
        f"{BENCH}/embed_memory.{{shard}}.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: workflow.cores
    resources:
        gpu=1 if USES_GPU else 0,
        mem_mb=4000,
    params:
        config=job_config("embed", "device"),
        num_shards=len(MEMORY_SHARDS),
    shell:
        "OMP_NUM_THREADS={threads} testtime embed --config-json {params.config:q}"
        " --input {input.memory:q} --text-column text --id-column seq_id"
        " --shard {wildcards.shard} --num-shards {params.num_shards}"
        " --out {output.embeddings:q} > {log:q} 2>&1"


rule embed_prompts:
    input:
        prompts=rules.chunk.output.prompts,
    output:
        embeddings=f"{DATA}/embeddings/prompts.npy",
        ids=f"{DATA}/embeddings/prompts.ids.npy",
    log:
        f"{LOGS}/embed_prompts.log",
    benchmark:
        f"{BENCH}/embed_prompts.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: workflow.cores
    resources:
        gpu=1 if USES_GPU else 0,
        mem_mb=4000,
    params:
        config=job_config("embed", "device"),
    shell:
        "OMP_NUM_THREADS={threads} testtime embed --config-json {params.config:q}"
        " --input {input.prompts:q} --text-column prompt_text --id-column prompt_id"
        " --out {output.embeddings:q} > {log:q} 2>&1"


# Stage target (dvc.yaml runs one stage at a time through these).
rule stage_embed:
    input:
        memory_embeddings,
        rules.embed_prompts.output,
    localrule: True
