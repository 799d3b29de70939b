"""Bad config fails before any work, naming the key."""

from __future__ import annotations

import subprocess
import time

import pytest

from model_src.config import ConfigError, config_from_dict, config_hash, load_config
from tests.conftest import ROOT, THINKPIPE


def test_profiles_load_and_overrides_are_typed():
    cfg = load_config("tiny", ["pretrain.num_steps=7", "sft.lr=3e-4", "rlcs.top_p=1"])
    assert cfg.pretrain.num_steps == 7 and cfg.sft.lr == pytest.approx(3e-4)
    assert isinstance(cfg.rlcs.top_p, float)
    assert load_config("small").profile == "small"


@pytest.mark.parametrize(
    ("profile", "overrides", "named"),
    [
        ("nope", [], "unknown profile 'nope'"),
        ("tiny", ["pretrain.lrr=1e-3"], "'pretrain.lrr'"),
        ("tiny", ["nosection.x=1"], "'nosection'"),
        ("tiny", ["pretrain.num_steps=ten"], "'pretrain.num_steps'"),
        ("tiny", ["pretrain.num_steps=1.5"], "'pretrain.num_steps'"),
        ("tiny", ["rlcs.group_size=1"], "'rlcs.group_size'"),
        ("tiny", ["rlcs.offline_k=1"], "'rlcs.offline_k'"),  # would grade with groups of 1
        ("tiny", ["model.mrope_section=[2,2,2]"], "'model.mrope_section'"),
        ("tiny", ["curate.rl_fraction=true"], "'curate.rl_fraction'"),
        ("tiny", ["seed"], "section.key=value"),
    ],
)
def test_bad_config_names_the_key(profile, overrides, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace(".", r"\.")):
        load_config(profile, overrides)


def test_config_roundtrip_and_hash_changes_with_content():
    cfg = load_config("tiny")
    assert config_from_dict(cfg.to_dict()) == cfg
    assert config_hash(cfg) == config_hash(load_config("tiny"))
    assert config_hash(cfg) != config_hash(load_config("tiny", ["sft.lr=0.1"]))
    # a stage's hash only covers the sections it reads
    other = load_config("tiny", ["sft.lr=0.1"])
    assert cfg.section_hash("pretrain") == other.section_hash("pretrain")
    assert cfg.section_hash("sft") != other.section_hash("sft")


@pytest.mark.parametrize(("args", "named"), [
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--profile", "tiny", "--set", "sft.bogus=1"], "'sft.bogus'"),
    (["--profile", "tiny", "--set", "sft.num_steps=abc"], "'sft.num_steps'"),
])
def test_cli_rejects_bad_config_before_any_work(tmp_path, args, named):
    started = time.monotonic()
    proc = subprocess.run([*THINKPIPE, "run", *args, "--state-dir", str(tmp_path / "state")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert named in proc.stderr
    assert not (tmp_path / "state").exists()  # no store, no kfp outputs: nothing started
    assert time.monotonic() - started < 30


def test_derived_configs_are_validated_like_loaded_ones():
    from model_src.config import derive

    cfg = load_config("tiny", ["rlcs.offline_k=4"])
    graded = derive(cfg.rlcs, "rlcs", group_size=cfg.rlcs.offline_k)  # what offline grading uses
    assert graded.group_size == 4 and graded.lr == cfg.rlcs.lr
    with pytest.raises(ConfigError, match="'rlcs.group_size'"):
        derive(cfg.rlcs, "rlcs", group_size=1)
    with pytest.raises(ConfigError, match="'evaluate.checkpoint_samples_per_domain'"):
        derive(cfg.evaluate, "evaluate", checkpoint_samples_per_domain=cfg.evaluate.max_samples_per_domain + 1)
