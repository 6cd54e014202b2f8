# Stage index: Faiss index over memory, then the top-K candidates of every prompt.


rule index:
    input:
        embeddings=memory_embeddings,
    output:
        index=f"{DATA}/memory.faiss",
    log:
        f"{LOGS}/index.log",
    benchmark:
        f"{BENCH}/index.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: workflow.cores
    params:
        config=job_config("index", "seed"),
    shell:
        "OMP_NUM_THREADS={threads} testtime index --config-json {params.config:q}"
        " --embeddings {input.embeddings:q} --out {output.index:q} > {log:q} 2>&1"


rule candidates:
    input:
        index=rules.index.output.index,
        queries=rules.embed_prompts.output.embeddings,
    output:
        candidates=f"{DATA}/candidates.parquet",
    log:
        f"{LOGS}/candidates.log",
    benchmark:
        f"{BENCH}/candidates.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: workflow.cores
    params:
        config=job_config("index", "select.k"),
    shell:
        "OMP_NUM_THREADS={threads} testtime candidates --config-json {params.config:q}"
        " --index {input.index:q} --queries {input.queries:q}"
        " --out {output.candidates:q} > {log:q} 2>&1"


# Stage target (dvc.yaml runs one stage at a time through these).
rule stage_index:
    input:
        rules.candidates.output,
    localrule: True
