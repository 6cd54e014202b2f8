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
    log:
        f"{LOGS}/select.{{method}}.log",
    benchmark:
        f"{BENCH}/select.{{method}}.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: 1
    params:
        config=variant_config("select"),
    shell:
        "OMP_NUM_THREADS={threads} testtime select --config-json {params.config:q}"
        " --method {wildcards.method} --candidates {input.candidates:q}"
        " --memory-embeddings {input.memory_embeddings:q}"
        " --prompt-embeddings {input.prompt_embeddings:q}"
        " --index {input.index:q} --memory {input.memory:q}"
        " --out {output.selection:q} > {log:q} 2>&1"


# Stage target (dvc.yaml runs one stage at a time through these).
rule stage_select:
    input:
        expand(rules.select.output.selection, method=VARIANTS),
    localrule: True
