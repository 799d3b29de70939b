"""The one list of pipeline stages. Everything that needs to know the stages derives from it:

- the config's per-stage cluster settings (`cluster.stages.<name>`, model_src/config/cluster.py);
- each component's KFP caching and the DAG's wiring check (pipelines/training.py);
- the order and the upstream links of the lineage report (model_src/lineage_report.py);
- the reused-stage lookup that closes a pipeline run (model_src/stages/finish.py);
- `thinkpipe stages`, which prints this table.

A new stage is one module in this package (its `run` entry point) plus one entry here. This module
imports nothing heavy: the config and the CLI read it at start.

    >>> STAGE_NAMES
    ('init', 'curate', 'pretrain', 'sft', 'rlcs', 'evaluate', 'export')
    >>> stage("sft").upstream
    {'sft_data': ('curate', 'sft'), 'base_model': ('pretrain', 'model')}
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    # top-level config sections the stage reads: they (and only they) enter its content key
    config_sections: tuple[str, ...] = ()
    # input name -> (upstream stage, its output name); inputs not listed come from the pipeline's parameters
    upstream: dict[str, tuple[str, str]] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    # KFP caching: a re-run whose inputs (the lineage value and the upstream artifacts) are unchanged
    # reuses the outputs and starts no process. Off only for init, which opens the pipeline's MLflow run.
    kfp_caching: bool = True
    # MLflow samples CPU/memory/GPU into system/* metrics while the stage works
    system_metrics: bool = False
    # may run as a multi-node training job on a cluster (model_src/cluster/training_job.py)
    training_job: bool = False
    # tasks that do part of the stage's work before it, fanned out (their own components, with the
    # stage's cluster settings and caching): curate's per-shard scan
    fan_out: tuple[str, ...] = ()

    @property
    def tasks(self) -> tuple[str, ...]:
        """The DAG's task names of this stage: its fan-out tasks, then itself."""
        return (*self.fan_out, self.name)


STAGES: tuple[Stage, ...] = (
    Stage("init", "check the data against its DVC pin, open the pipeline's MLflow parent run, hand on the lineage",
          kfp_caching=False),
    Stage("curate", "check every raw row, quarantine bad ones with a reason, deduplicate, split",
          config_sections=("curate",), outputs=("pretrain", "sft", "rl", "eval", "report"),
          fan_out=("curate-plan", "curate-scan")),
    Stage("pretrain", "learn the tokenizer, build Glm4v, train it to caption images",
          config_sections=("seed", "tokenizer", "model", "pretrain"),
          upstream={"pretrain_data": ("curate", "pretrain")}, outputs=("model",),
          system_metrics=True, training_job=True),
    Stage("sft", "long chain-of-thought supervised fine-tuning (cold start)",
          config_sections=("seed", "sft"),
          upstream={"sft_data": ("curate", "sft"), "base_model": ("pretrain", "model")}, outputs=("model",),
          system_metrics=True, training_job=True),
    Stage("rlcs", "GRPO with curriculum sampling on the verifiable RL prompts",
          config_sections=("seed", "rlcs", "reward"),
          upstream={"rl_data": ("curate", "rl"), "sft_model": ("sft", "model")}, outputs=("model",),
          system_metrics=True, training_job=True),
    Stage("evaluate", "held-out accuracy per domain, for the final model and the earlier checkpoints",
          config_sections=("seed", "evaluate", "reward"),
          upstream={"eval_data": ("curate", "eval"), "model": ("rlcs", "model"),
                    "pretrain": ("pretrain", "model"), "sft": ("sft", "model")}, outputs=("report",),
          training_job=True),
    Stage("export", "HF folder with model card, reload check, MLflow registration and promotion gate",
          config_sections=("export",),
          upstream={"model": ("rlcs", "model"), "eval_report": ("evaluate", "report")}, outputs=("exported",)),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
TASK_NAMES: tuple[str, ...] = tuple(task for s in STAGES for task in s.tasks)  # every task of the DAG but finish
STAGE_OF_TASK: dict[str, str] = {task: s.name for s in STAGES for task in s.tasks}
_BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r} (stages: {', '.join(STAGE_NAMES)})") from None


def describe() -> str:
    """The registry as a table (`thinkpipe stages`)."""
    lines = [f"{'stage':<9} {'cached':<7} {'config sections':<32} inputs <- upstream",]
    for s in STAGES:
        links = ", ".join(f"{name}<-{up}.{out}" for name, (up, out) in s.upstream.items()) or "(pipeline parameters)"
        lines.append(f"{s.name:<9} {'yes' if s.kfp_caching else 'no':<7} {','.join(s.config_sections) or '-':<32} {links}")
        lines.append(f"{'':<9} {s.summary}; outputs: {', '.join(s.outputs) or '-'}"
                     + (f"; fans out first: {', '.join(s.fan_out)}" if s.fan_out else ""))
    return "\n".join(lines)
