"""The OpenAI-compatible embeddings backend, checked against the official `openai` client
talking to the same in-process server."""

import base64
import json

import httpx
import numpy as np
import openai
import pytest

from groklm.apps.rag.embed import ApiEmbedder, load_embedder
from groklm.apps.rag.index import Index
from groklm.apps.rag.retrieve import search
from groklm.errors import GroklmError

from helpers.rag import doc


class EmbeddingsServer:
    """POST /v1/embeddings: a fixed random vector per distinct text (not unit length), in
    shuffled order, as float lists or base64 (the openai client asks for base64)."""

    def __init__(self, dim: int = 24):
        self.dim, self.requests, self.vectors = dim, [], {}
        self.rng = np.random.default_rng(0)

    def vector(self, text: str) -> np.ndarray:
        if text not in self.vectors:
            self.vectors[text] = self.rng.normal(size=self.dim).astype(np.float32) * 3
        return self.vectors[text]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/embeddings":
            return httpx.Response(404, json={"error": {"message": "not found"}})
        body = json.loads(request.content)
        self.requests.append({"body": body, "auth": request.headers.get("authorization")})
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        data = []
        for i, text in enumerate(texts):
            vector = self.vector(text)
            encoded = base64.b64encode(vector.tobytes()).decode() if body.get("encoding_format") == "base64" else vector.tolist()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        return httpx.Response(200, json={"object": "list", "model": body["model"], "data": data[::-1],
                                         "usage": {"prompt_tokens": 1, "total_tokens": 1}})


TEXTS = ["first text", "second one", "a third", "and a fourth", "fifth and last"]


def test_same_vectors_as_the_openai_client():
    server = EmbeddingsServer()
    client = openai.OpenAI(base_url="http://test/v1", api_key="sk-test", http_client=httpx.Client(transport=httpx.MockTransport(server)))
    data = sorted(client.embeddings.create(model="emb-1", input=TEXTS).data, key=lambda e: e.index)
    expected = np.array([e.embedding for e in data], dtype=np.float32)
    ours = ApiEmbedder("http://test/v1", "emb-1", api_key="sk-test", batch_size=2, transport=httpx.MockTransport(server))
    got = ours.embed(TEXTS)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    ours_requests = server.requests[1:]
    assert [r["body"]["input"] for r in ours_requests] == [TEXTS[0:2], TEXTS[2:4], TEXTS[4:]]
    assert {r["auth"] for r in server.requests} == {"Bearer sk-test"}
    assert ours.identity == {"backend": "api", "model": "emb-1", "dim": 24}


def test_index_over_an_api_embedder(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = EmbeddingsServer()
    embedder = ApiEmbedder("http://test/v1", "emb-1", api_key="secret", transport=httpx.MockTransport(server))
    index = Index.create(tmp_path / "idx", embedder)
    index.upsert([doc("/d/a.txt", "alpha"), doc("/d/b.txt", "beta")])
    hits = search(index, "beta", k=1, mode="dense")  # the server gives "beta" the same vector both times
    assert hits[0].chunk.source == "/d/b.txt" and hits[0].similarity == pytest.approx(1.0)
    stored = index.meta("embedder_spec")
    assert stored == "openai:http://test/v1#emb-1" and "secret" not in json.dumps(index.meta("embedder"))
    assert isinstance(load_embedder(stored), ApiEmbedder)


def test_server_errors_are_clear():
    def failing(request):
        return httpx.Response(500, text="model overloaded")

    with pytest.raises(GroklmError, match="answered 500: model overloaded"):
        ApiEmbedder("http://test/v1", "m", transport=httpx.MockTransport(failing)).embed(["x"])

    def refusing(request):
        raise httpx.ConnectError("connection refused")

    with pytest.raises(GroklmError, match="unreachable"):
        ApiEmbedder("http://test/v1", "m", transport=httpx.MockTransport(refusing)).embed(["x"])
