"""The pipeline's stages, one module each, in DAG order:

    init.py      lineage value, data pin check, the pipeline's MLflow parent run
    curate.py    quarantine, dedup, contamination, recaption, balance, split
    pretrain.py  tokenizer + Glm4v, trained to caption images
    sft.py       long-CoT supervised fine-tuning
    rlcs.py      GRPO with curriculum sampling
    evaluate.py  held-out accuracy per domain (and per earlier checkpoint)
    export.py    HF folder, registration, promotion gate
    finish.py    the exit handler: closes the parent run, records reused stages
    check_data.py  the retraining DAG's first step

Each stage module has a `run(...)` entry point that a KFP component (components/) calls with plain
strings and paths, and (most) a `work(ctx)` function that `runner.run_stage` calls inside the
stage's MLflow run. registry.py lists the stages once; runner.py is the life of one stage;
models.py, plots.py and training.py hold what several stages share.

This package's __init__ imports nothing, so `from model_src.stages.registry import STAGES` stays light.
"""
