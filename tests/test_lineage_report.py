"""On a cluster a KFP cache hit never starts the stage, so this pipeline run's MLflow parent lacks
it: the lineage report still follows the artifact hashes back to the runs that made them."""

from __future__ import annotations

import mlflow

from model_src.lineage_report import lineage_report


def test_report_follows_hashes_to_stages_kfp_reused(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("lineage", artifact_location=(tmp_path / "art").as_uri())

    def run(stage, parent=None, **tags):
        r = client.create_run(exp, run_name=stage, tags={"thinkpipe.stage": stage, **tags,
                                                          **({"mlflow.parentRunId": parent} if parent else {})})
        client.set_terminated(r.info.run_id, "FINISHED")
        return r.info.run_id

    earlier = run("pipeline")
    run("sft", earlier, **{"thinkpipe.input.sft_data": "h0", "thinkpipe.output.model": "h1"})
    run("rlcs", earlier, **{"thinkpipe.input.sft_model": "h1", "thinkpipe.output.model": "h2"})
    run("rlcs", earlier, **{"thinkpipe.input.sft_model": "hx", "thinkpipe.output.model": "h9"})  # another model
    now = run("pipeline")
    export = run("export", now, **{"thinkpipe.input.model": "h2", "thinkpipe.output.exported": "h3"})
    client.create_registered_model("m")
    client.create_model_version("m", "file:///m", run_id=export, tags={"thinkpipe.export_run_id": export})

    report = lineage_report("m/1", client)
    assert [s["stage"] for s in report["stages"]] == ["sft", "rlcs", "export"]
    rlcs = report["stages"][1]
    assert rlcs["outputs"] == {"model": "h2"} and report["pipeline_run"]["run_id"] == now
