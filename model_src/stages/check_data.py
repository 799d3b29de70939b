"""check_data: the retraining pipeline's first step (pipelines/retraining.py).

Clones the project's repository, compares its DVC pin with the champion's training data and, when
it changed, pulls that data to `data_root/<hash>` for the training DAG. Not in the paper: it is
how a schedule retrains only on new data.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from model_src.config import config_from_json
from model_src.stages.runner import skip_final_gc


def run(*, config_json: str, data_repo: str, data_branch: str, data_root: str,
        pipeline_run_name: str = "") -> dict[str, str]:
    """The decision and where the data is: retrain, reason, data_hash, data_rev, data_dir, and the
    champion the training DAG compares its model with (champion_version, "" none)."""
    from model_src.retrain import check_data, clone_repo, log_decision, materialize_data
    from model_src.tracking import ensure_experiment

    cfg = config_from_json(config_json)
    with tempfile.TemporaryDirectory() as tmp:
        clone = clone_repo(data_repo, data_branch, Path(tmp) / "repo")
        decision = check_data(clone, cfg.export.registered_model_name)
        log_decision(decision, ensure_experiment(cfg.experiment), pipeline_run_name or "retrain-check")
        print(f"check_data: {'retrain' if decision.retrain else 'skip'}: {decision.reason}", flush=True)
        # a pod pulls from the remote the cluster profile names (its S3 one), not the repository's default
        data_dir = str(materialize_data(clone, decision.latest, data_root, remote=cfg.cluster.dvc_remote or None)
                       ) if decision.retrain else ""
    skip_final_gc()
    return {"retrain": decision.retrain, "reason": decision.reason, "data_hash": decision.latest.data_hash,
            "data_rev": decision.latest.data_rev, "data_dir": data_dir, "champion_version": decision.champion_version}
