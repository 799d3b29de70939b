"""Check a TrainJob against Kubeflow Trainer's own API models (`kubeflow-trainer-api`, v2.3).

The models check types but silently drop keys it does not know, as a Kubernetes API
server without strict field validation prunes them: a misspelt field would vanish on the way to
the cluster. `train_job_problems` walks the object against the models' fields (by their JSON
names) and names every unknown one, then lets the models check the types; the launcher refuses a
job with problems before creating it, and the tests' API stand-in answers such a job with 422.
"""

from __future__ import annotations

import typing

from pydantic import BaseModel, ValidationError


def unknown_fields(model: type[BaseModel], obj: object, path: str = "") -> list[str]:
    """Dotted paths of the keys in `obj` (a JSON-shaped dict) that `model` has no field for."""
    if not isinstance(obj, dict):
        return []
    fields = {(info.alias or name): info for name, info in model.model_fields.items()}
    problems = []
    for key, value in obj.items():
        where = f"{path}.{key}" if path else key
        info = fields.get(key)
        if info is None:
            problems.append(where)
            continue
        problems += _nested_unknown(info.annotation, value, where)
    return problems


def _nested_unknown(annotation, value, where: str) -> list[str]:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return unknown_fields(annotation, value, where)
    if origin in (list, typing.List) and isinstance(value, list):  # noqa: UP006 (the models use typing.List)
        return [p for i, item in enumerate(value) for p in _nested_unknown(args[0], item, f"{where}[{i}]")]
    if origin in (dict, typing.Dict) and isinstance(value, dict):  # noqa: UP006
        return [p for k, item in value.items() for p in _nested_unknown(args[1], item, f"{where}.{k}")]
    if origin is typing.Union:  # Optional[X]
        return [p for arg in args if arg is not type(None) for p in _nested_unknown(arg, value, where)]
    return []


def train_job_problems(job: dict) -> list[str]:
    """What Kubeflow Trainer's API would refuse in `job` (unknown fields, wrong types); [] if none."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    problems = [f"unknown field {p}" for p in unknown_fields(TrainerV1alpha1TrainJob, job)]
    if job.get("apiVersion") != "trainer.kubeflow.org/v1alpha1" or job.get("kind") != "TrainJob":
        problems.append(f"not a trainer.kubeflow.org/v1alpha1 TrainJob: apiVersion {job.get('apiVersion')!r}, "
                        f"kind {job.get('kind')!r}")
    if not (job.get("spec") or {}).get("runtimeRef"):
        problems.append("spec.runtimeRef is required")
    try:
        TrainerV1alpha1TrainJob.from_dict(job)  # (from_dict, not model_validate: it resolves oneOf quantities)
    except (ValidationError, ValueError) as exc:  # raised by the nested model that failed: name it
        where = getattr(exc, "title", "TrainJob")
        errors = exc.errors() if isinstance(exc, ValidationError) else [{"loc": (), "msg": str(exc)}]
        problems += [f"{where}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in errors]
    return problems
