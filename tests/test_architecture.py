"""The glm4v-9b profile is the real GLM-4.1V-9B architecture, checked on the meta device (no
weights allocated); released HF-format weights load from a local folder or S3."""

from __future__ import annotations

import pytest
import torch

from model_src.config import ConfigError, load_config
from model_src.model.build import build_processor, glm4v_config, load_model_and_processor, train_tokenizer


def _meta_param_count(config) -> tuple[int, bool]:
    from transformers import Glm4vForConditionalGeneration

    with torch.device("meta"):
        model = Glm4vForConditionalGeneration(config)
    params = list(model.parameters())
    return sum(p.numel() for p in params), all(p.is_meta for p in params)


def test_9b_profile_builds_the_published_architecture_on_the_meta_device():
    from transformers import Glm4vConfig

    cfg = load_config("glm4v-9b")
    tokenizer = train_tokenizer(["a small corpus for the control tokens"] * 4, 300)
    ours, all_meta = _meta_param_count(glm4v_config(cfg.model, tokenizer))
    # transformers' Glm4vConfig defaults are GLM-4.1V-9B-Thinking's configuration
    reference, _ = _meta_param_count(Glm4vConfig())
    assert all_meta  # nothing was allocated
    assert ours == reference
    assert 10.2e9 < ours < 10.4e9  # published as a 10B-parameter model (9B language model + ViT)
    text = glm4v_config(cfg.model, tokenizer).text_config
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads, text.num_key_value_heads,
            text.vocab_size) == (40, 4096, 32, 2, 151552)
    assert cfg.model.text_head_dim == 128 and list(cfg.model.mrope_section) == [8, 12, 12]


def test_pretraining_can_be_skipped_only_with_released_weights():
    with pytest.raises(ConfigError, match="'pretrain.num_steps'"):
        load_config("tiny", ["pretrain.num_steps=0"])
    cfg = load_config("tiny", ["pretrain.num_steps=0", "model.init_from=/models/released"])
    assert cfg.pretrain.num_steps == 0
    with pytest.raises(ConfigError, match="'model.init_from'"):
        load_config("tiny", ["model.init_from=https://huggingface.co/zai-org/GLM-4.1V-9B-Thinking"])


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A tiny 'released' checkpoint in HF format."""
    from model_src.model.build import build_model
    from model_src.stages.models import save_model

    cfg = load_config("tiny")
    tokenizer = train_tokenizer(["one two three four five six seven eight nine"] * 8, 300)
    processor = build_processor(tokenizer, cfg.model)
    model = build_model(cfg.model, tokenizer, seed=7)
    folder = tmp_path_factory.mktemp("released")
    save_model(model, processor, folder)
    return folder, model


def _same_weights(a, b) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def test_init_from_a_local_folder_or_s3_loads_the_released_weights(released, tmp_path, monkeypatch):
    from tests.s3_server import s3_server

    folder, original = released
    model, processor = load_model_and_processor(str(folder))
    assert _same_weights(model, original) and processor.chat_template

    with s3_server("models") as (env, client):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("THINKPIPE_CACHE", str(tmp_path / "cache"))
        for path in folder.rglob("*"):
            if path.is_file():
                client.upload_file(str(path), "models", f"glm/tiny/{path.relative_to(folder)}")
        model, _ = load_model_and_processor("s3://models/glm/tiny")
        assert _same_weights(model, original)
        assert (tmp_path / "cache" / "s3" / "models" / "glm" / "tiny" / "model.safetensors").exists()
        with pytest.raises(FileNotFoundError, match="s3://models/nothing"):
            load_model_and_processor("s3://models/nothing")
        # the CLI's check before any stage: weights that are there pass; a wrong prefix, a closed
        # endpoint or a local folder without config.json fail naming model.init_from
        from model_src.config import ConfigError
        from model_src.model.build import check_weights_location

        check_weights_location("s3://models/glm/tiny")
        check_weights_location(str(folder))
        with pytest.raises(ConfigError, match="'model.init_from': no objects under s3://models/nothing"):
            check_weights_location("s3://models/nothing")
    with pytest.raises(ConfigError, match="'model.init_from'.*cannot be listed"):  # the server is gone now
        check_weights_location("s3://models/glm/tiny", timeout_s=2)
    with pytest.raises(ConfigError, match="no config.json"):
        check_weights_location(str(tmp_path))


def test_pretrain_stage_hands_on_released_weights_when_skipped(released, tmp_path, monkeypatch):
    import mlflow
    import pyarrow.parquet as pq

    from model_src.data.curate import CURATED_SCHEMA
    from model_src.lineage import dvc_pin
    from model_src.stages import init, pretrain
    from tests.conftest import ROOT

    folder, original = released
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("THINKPIPE_PIPELINE_RUN", "skip-1")
    mlflow.set_tracking_uri(tracking)
    mlflow.MlflowClient(tracking).create_experiment("skip-test", artifact_location=(tmp_path / "art").as_uri())
    cfg = load_config("tiny", ["experiment=skip-test", "pretrain.num_steps=0", f"model.init_from={folder}"])
    data_hash, data_rev = dvc_pin(ROOT)
    lineage, _ = init.run(config_json=cfg.to_json(), data_dir=str(ROOT / "data" / "raw"), git_commit="abc",
                          data_hash=data_hash, data_rev=data_rev, image="test-image", pipeline_run_name="skip")
    (tmp_path / "pretrain").mkdir()
    pq.write_table(CURATED_SCHEMA.empty_table(), tmp_path / "pretrain" / "data.parquet")
    metrics = pretrain.run(lineage=lineage.to_json(), pretrain_data=str(tmp_path / "pretrain"),
                           model_out=str(tmp_path / "model"))
    assert metrics["skipped"] == 1.0
    model, _ = load_model_and_processor(str(tmp_path / "model"))
    assert _same_weights(model, original)
    # the source of the weights is a result tag under its one name (it was once written with the
    # prefix twice); runs recorded under the old name are still read
    from model_src.names import read_tag, result_tag

    [run] = mlflow.MlflowClient(tracking).search_runs([mlflow.get_experiment_by_name("skip-test").experiment_id],
                                                      "tags.`thinkpipe.stage` = 'pretrain'")
    assert run.data.tags["thinkpipe.result.init_from"] == str(folder) == read_tag(run.data.tags, result_tag("init_from"))
    assert not [k for k in run.data.tags if k.startswith("thinkpipe.result.thinkpipe.")]
    assert read_tag({"thinkpipe.result.thinkpipe.init_from": "/old"}, result_tag("init_from")) == "/old"
