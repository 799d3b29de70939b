"""The serving client's one URL convention, against an OpenAI-API stand-in on 127.0.0.1: the URL
`thinkpipe serve` prints (`.../v1`) and the server's root both reach `/v1/chat/completions`."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest
from PIL import Image

from model_src import serving
from tests.loopback import LoopbackServer


class OpenAIStandIn(BaseHTTPRequestHandler):
    seen: list[tuple[str, dict]] = []
    authorization: list[str | None] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        OpenAIStandIn.seen.append((self.path, body))
        OpenAIStandIn.authorization.append(self.headers.get("Authorization"))
        if self.path != "/v1/chat/completions":
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"detail": "Not Found"}')
            return
        reply = {"choices": [{"message": {"content": "<answer>7</answer>"}, "finish_reason": "stop",
                              "token_ids": [5, 6]}], "prompt_token_ids": [1, 2, 3], "usage": {"completion_tokens": 2}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # quiet
        pass


@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "", "/"])
def test_chat_takes_the_url_serve_prints_or_the_servers_root(suffix):
    OpenAIStandIn.seen.clear()
    with LoopbackServer(OpenAIStandIn) as server:
        host, port = server.url.removeprefix("http://").split(":")
        assert serving.api_url(host, int(port)) == server.url + "/v1"  # what `thinkpipe serve` prints
        reply = serving.chat(server.url + suffix, "thinkpipe", Image.new("RGB", (28, 28), "white"), "Which digit?")
    assert reply.text == "<answer>7</answer>" and reply.token_ids == [5, 6] and reply.prompt_token_ids == [1, 2, 3]
    [(path, body)] = OpenAIStandIn.seen
    assert path == "/v1/chat/completions" and body["model"] == "thinkpipe" and body["temperature"] == 0.0
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")


def test_an_http_error_names_the_url_and_the_servers_answer():
    with LoopbackServer(OpenAIStandIn) as server:
        with pytest.raises(serving.ServingError, match=r"/api/v1: HTTP 404: \{\"detail\": \"Not Found\"\}"):
            serving.chat(server.url + "/api", "thinkpipe", Image.new("RGB", (28, 28)), "Which digit?")


def test_clients_send_the_bearer_token_and_the_rollout_server_asks_for_it(monkeypatch):
    """vLLM and the rollout server sit behind a bearer token on a cluster: thinkpipe's clients send
    THINKPIPE_VLLM_API_KEY; the rollout server refuses a POST without its VLLM_API_KEY (health stays open)."""
    import urllib.error
    import urllib.request

    from model_src.serving.rollout_server import make_handler

    OpenAIStandIn.authorization.clear()
    with LoopbackServer(OpenAIStandIn) as server:
        serving.chat(server.url, "thinkpipe", Image.new("RGB", (28, 28)), "Which digit?")
        monkeypatch.setenv("THINKPIPE_VLLM_API_KEY", "k-123")
        serving.chat(server.url, "thinkpipe", Image.new("RGB", (28, 28)), "Which digit?")
    assert OpenAIStandIn.authorization == [None, "Bearer k-123"]

    monkeypatch.setenv("VLLM_API_KEY", "k-123")
    with LoopbackServer(make_handler(llm=None)) as server:
        def post(headers: dict) -> int:
            request = urllib.request.Request(f"{server.url}/load_weights", data=b'{"path": "/nonexistent"}',
                                             headers={"Content-Type": "application/json", **headers})
            try:
                with urllib.request.urlopen(request) as reply:
                    return reply.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert post({}) == 401 and post({"Authorization": "Bearer wrong"}) == 401
        assert post({"Authorization": "Bearer k-123"}) == 500  # let in: fails only on the missing file
        with urllib.request.urlopen(f"{server.url}/health") as reply:
            assert reply.status == 200
