# Stage data: corpus -> tokenizer -> chunks (pretrain / memory / prompts) -> base LM.


rule corpus:
    input:
        pinned=demo_corpus_manifest,
    output:
        documents=f"{DATA}/documents.parquet",
    log:
        f"{LOGS}/corpus.log",
    benchmark:
        f"{BENCH}/corpus.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: 1
    params:
        # the model's name: its context is checked against data.seq_len before streaming
        config=job_config("seed", "data", "model.source", "model.name_or_path"),
    shell:
        "OMP_NUM_THREADS={threads} testtime corpus --config-json {params.config:q}"
        " --out {output.documents:q} > {log:q} 2>&1"


rule tokenizer:
    input:
        documents=rules.corpus.output.documents,
    output:
        tokenizer=directory(f"{DATA}/tokenizer"),
    log:
        f"{LOGS}/tokenizer.log",
    benchmark:
        f"{BENCH}/tokenizer.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: workflow.cores
    params:
        config=job_config("seed", "model"),
    shell:
        "OMP_NUM_THREADS={threads} RAYON_NUM_THREADS={threads} testtime tokenizer"
        " --config-json {params.config:q} --documents {input.documents:q}"
        " --out {output.tokenizer:q} > {log:q} 2>&1"


rule chunk:
    input:
        documents=rules.corpus.output.documents,
        tokenizer=rules.tokenizer.output.tokenizer,
    output:
        pretrain=f"{DATA}/pretrain.parquet",
        memory=f"{DATA}/memory.parquet",
        prompts=f"{DATA}/prompts.parquet",
    log:
        f"{LOGS}/chunk.log",
    benchmark:
        f"{BENCH}/chunk.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: workflow.cores
    params:
        config=job_config("seed", "data", "model"),
    shell:
        "OMP_NUM_THREADS={threads} RAYON_NUM_THREADS={threads} testtime chunk"
        " --config-json {params.config:q} --documents {input.documents:q}"
        " --tokenizer {input.tokenizer:q} --pretrain-out {output.pretrain:q}"
        " --memory-out {output.memory:q} --prompts-out {output.prompts:q} > {log:q} 2>&1"


# Checkpoints live outside the declared output, so a killed or failed job resumes from them.
rule pretrain:
    input:
        tokenizer=rules.tokenizer.output.tokenizer,
        pretrain=rules.chunk.output.pretrain,
    output:
        model=directory(f"{DATA}/base_model"),
    log:
        f"{LOGS}/pretrain.log",
    benchmark:
        f"{BENCH}/pretrain.tsv"
    conda:
        "../envs/testtime.yaml"
    threads: workflow.cores
    resources:
        gpu=1 if USES_GPU else 0,
        mem_mb=8000,
    params:
        config=job_config("seed", "model", "data.seq_len", "device"),
        checkpoints=f"{DATA}/checkpoints",
    shell:
        "OMP_NUM_THREADS={threads} testtime pretrain --config-json {params.config:q}"
        " --tokenizer {input.tokenizer:q} --pretrain {input.pretrain:q}"
        " --checkpoint-dir {params.checkpoints:q} --out {output.model:q} > {log:q} 2>&1"


# Stage target (dvc.yaml runs one stage at a time through these).
rule stage_data:
    input:
        rules.chunk.output,
        rules.tokenizer.output,
    localrule: True


rule stage_pretrain:
    input:
        rules.pretrain.output,
    localrule: True
