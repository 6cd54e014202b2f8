# Stage select: one selection per method variant (sift, nn, nn_f, us, random, sift_lam<x>).


rule select:
    input:
        candidates=rules.candidates.output.candidates,
        memory_embeddings=memory_embeddings,
        prompt_embeddings=rules.embed_prompts.output.embeddings,
        # methods on a memory subset (select.memory_fractions) search the index again
        index=rules.index.output.index,
        memory=rules.chunk.output.memory,
    output:
        selection=f"{DATA}/selections/{{method}}.parquet",
    params:
        config=job_config("seed", "select", "device", "index"),
    conda:
        "../envs/testtime.yaml"
    log:
        f"{LOGS}/select.{{method}}.log",
    benchmark:
        f"{BENCH}/select.{{method}}.tsv"
    threads: 1
    shell:
        "OMP_NUM_THREADS={threads} testtime select --config-json {params.config:q}"
        " --method {wildcards.method} --candidates {input.candidates:q}"
        " --memory-embeddings {input.memory_embeddings:q}"
        " --prompt-embeddings {input.prompt_embeddings:q}"
        " --index {input.index:q} --memory {input.memory:q}"
        " --out {output.selection:q} > {log:q} 2>&1"


# Stage target (dvc.yaml runs one stage at a time through these).
rule stage_select:
    localrule: True
    input:
        expand(rules.select.output.selection, method=VARIANTS),
