"""Every name thinkpipe writes into MLflow or reads from the environment, defined once.

Tags are what lineage is made of (docs/architecture.md, "Lineage"): a reviewer's query, the cache
lookup and the lineage report all read them, so a name spelled twice is a name that can drift.
Renamed tags stay readable under their old names through `read_tag`.

    >>> result_tag("model_version")
    'thinkpipe.result.model_version'
    >>> read_tag({"thinkpipe.pipeline_run": "small-1"}, PIPELINE_RUN_TAG)
    'small-1'
"""

from __future__ import annotations

TAG_PREFIX = "thinkpipe."

# -- the lineage tuple, on every run (model_src/lineage.py)
GIT_COMMIT_TAG = f"{TAG_PREFIX}git_commit"
DATA_HASH_TAG = f"{TAG_PREFIX}data_hash"
DATA_REV_TAG = f"{TAG_PREFIX}data_rev"
CONFIG_HASH_TAG = f"{TAG_PREFIX}config_hash"
IMAGE_TAG = f"{TAG_PREFIX}image"
# which pipeline run a run belongs to: unique per run (a run name plus a random suffix locally,
# the Argo workflow's name on a cluster)
PIPELINE_RUN_TAG = f"{TAG_PREFIX}pipeline_run"

# -- a stage run (model_src/stages/runner.py)
STAGE_TAG = f"{TAG_PREFIX}stage"        # the stage's name; "pipeline" on the parent run
PIPELINE_STAGE = "pipeline"
PROFILE_TAG = f"{TAG_PREFIX}profile"
CACHE_KEY_TAG = f"{TAG_PREFIX}cache_key"
STAGE_CONFIG_HASH_TAG = f"{TAG_PREFIX}stage_config_hash"
OUTPUTS_RUN_TAG = f"{TAG_PREFIX}outputs_run_id"  # the run whose artifacts hold this stage's outputs
CACHED_FROM_TAG = f"{TAG_PREFIX}cached_from"     # set when the outputs were reused, not computed
RESUMED_TAG = f"{TAG_PREFIX}resumed"
OWNER_TAG = f"{TAG_PREFIX}owner"                  # on a parent run: the process whose death means the pipeline is dead
TAKEN_OVER_BY_TAG = f"{TAG_PREFIX}taken_over_by"     # on a run marked KILLED: the parent run that took its work over
ERROR_TAG = f"{TAG_PREFIX}error"                 # on a FAILED stage or parent run: what failed
INPUT_TAG_PREFIX = f"{TAG_PREFIX}input."         # + input name: sha256 of the input artifact
OUTPUT_TAG_PREFIX = f"{TAG_PREFIX}output."       # + output name: sha256 of the output artifact
RESULT_TAG_PREFIX = f"{TAG_PREFIX}result."       # + key: a stage result a cache hit carries over
STEP_TAG = f"{TAG_PREFIX}step"                   # on a checkpoint's LoggedModel
# on the parent run: pipeline runs whose stage outputs this run reused without running them
REUSED_TAG_PREFIX = f"{TAG_PREFIX}reused."       # + stage: the stage run whose outputs were reused

# -- a registered model version (model_src/stages/export.py)
EXPORT_RUN_TAG = f"{TAG_PREFIX}export_run_id"
EVAL_TAG_PREFIX = f"{TAG_PREFIX}eval."           # + metric: the evaluation the version was promoted on
EVAL_DATA_HASH_TAG = f"{TAG_PREFIX}eval_data_hash"
PROMOTION_TAG = f"{TAG_PREFIX}promotion"
PROMOTION_FIGURE_PREFIX = f"{TAG_PREFIX}promotion."  # + figure: the paired comparison the decision read
COMPARED_WITH_TAG = f"{TAG_PREFIX}compared_with"     # the champion version the challenger was scored beside
LINEAGE_REPORT_TAG = f"{TAG_PREFIX}lineage_report"
EXPORT_S3_TAG = f"{TAG_PREFIX}export.s3_uri"
MODEL_CONTENT_TAG = f"{TAG_PREFIX}model_sha256"  # the exported folder's hash: one version per content

# -- retraining decisions (model_src/retrain.py)
RETRAIN_TAG = f"{TAG_PREFIX}retrain"
RETRAIN_REASON_TAG = f"{TAG_PREFIX}retrain_reason"

# Tags renamed since runs were first recorded: new name -> old names, read when the new is absent.
RENAMED_TAGS: dict[str, tuple[str, ...]] = {
    # pretrain wrote its init source under the doubled prefix before the result-tag fix
    f"{RESULT_TAG_PREFIX}init_from": (f"{RESULT_TAG_PREFIX}{TAG_PREFIX}init_from",),
}

# -- environment variables (read when called, never at import)
PIPELINE_RUN_ENV = "THINKPIPE_PIPELINE_RUN"        # the pipeline run a stage process belongs to
LAUNCHER_PID_ENV = "THINKPIPE_LAUNCHER_PID"        # the `thinkpipe run` process that runs the pipeline locally
CHECKPOINT_ROOT_ENV = "THINKPIPE_CHECKPOINT_ROOT"  # where stages keep resumable checkpoints (a PVC)
CACHE_ENV = "THINKPIPE_CACHE"                      # S3 / model download cache (a PVC)
FAULT_ENV = "THINKPIPE_FAULT_STAGE"                # fault drills: the named stage fails after opening its run
PROMOTION_PAUSE_ENV = "THINKPIPE_FAULT_PROMOTION_PAUSE_S"  # tests: widen promotion's read-to-write window
# tests: a JSON file {"challenger": {id: reward}, "champion": {id: reward}} whose rewards replace the
# evaluated ones at the evaluation boundary (a tiny model cannot train a better one in a test's time)
EVAL_REWARDS_FAULT_ENV = "THINKPIPE_FAULT_EVAL_REWARDS"
AFTER_WORK_FAULT_ENV = "THINKPIPE_FAULT_AFTER_WORK"   # fault drills: the named stage fails after its work, before its last act
NAMESPACE_ENV = "THINKPIPE_NAMESPACE"              # the pod's namespace, for the training-job launcher
IMAGE_ENV = "THINKPIPE_IMAGE"                      # the training-job launcher's image
# the bearer token thinkpipe's clients send to vLLM's server and to the rollout server (from a
# Secret, cluster.secret_env); the servers themselves read theirs from VLLM_API_KEY, as vLLM does
VLLM_API_KEY_ENV = "THINKPIPE_VLLM_API_KEY"
FAILURE_WEBHOOK_ENV = "THINKPIPE_FAILURE_WEBHOOK"
# a rollout server the cluster launcher started beside an RLCS job, and the shared folder the
# policy's weights go through to it (model_src/rl/rollout.py, model_src/cluster/rollout_server.py)
ROLLOUT_SERVER_ENV = "THINKPIPE_ROLLOUT_SERVER_URL"
ROLLOUT_WEIGHTS_ENV = "THINKPIPE_ROLLOUT_WEIGHTS_DIR"  # where a failed run is posted (a secret URL: model_src/notify.py)
SERVER_API_KEY_ENV = "VLLM_API_KEY"


def result_tag(key: str) -> str:
    """The tag of a stage result; `key` is the bare name ("model_version"), never a full tag."""
    if key.startswith(TAG_PREFIX):
        raise ValueError(f"result key {key!r} already carries the {TAG_PREFIX!r} prefix: pass the bare name")
    return f"{RESULT_TAG_PREFIX}{key}"


def read_tag(tags: dict[str, str], name: str, default: str = "") -> str:
    """`tags[name]`, or its value under an older name (RENAMED_TAGS) for runs recorded before a rename."""
    if name in tags:
        return tags[name]
    for old in RENAMED_TAGS.get(name, ()):
        if old in tags:
            return tags[old]
    return default

# Kubernetes: the labels the namespace's network policies admit (manifests/base/networkpolicy.yaml),
# carried by every compiled KFP pod and every training-job pod, and the non-root identity the
# image runs as (Dockerfile: USER 1000:1000), which the `restricted` pod security standard asks for
POD_LABELS = {"thinkpipe.io/role": "pipeline", "app.kubernetes.io/part-of": "thinkpipe"}
IMAGE_UID = 1000
