"""POST /v1/embeddings through the official `openai` client (in process, over ASGI)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from groklm.apps.rag.embed import Embedder
from groklm.infer.engine import AsyncEngine, Engine
from groklm.serve.api import create_app

from helpers.servers import make_server_run

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def embedder():
    return Embedder.default()


def call(app, work):
    """Run `work(client, http)` against the app: an AsyncOpenAI client and a raw httpx client."""
    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test/v1") as http:
            client = openai.AsyncOpenAI(base_url="http://test/v1", api_key="k", http_client=http, max_retries=0)
            return await work(client, http)

    return asyncio.run(main())


def test_embeddings_are_the_embedders_vectors(tmp_path, embedder):
    engine = AsyncEngine(Engine.from_run(make_server_run(tmp_path / "run"), max_batch=2))
    texts = ["The cat sat on the mat.", "Un chat est assis sur le tapis.", ""]
    try:
        app = create_app(engine, "tiny", embedder=embedder)

        async def work(client, http):
            models = [m.id for m in (await client.models.list()).data]
            base64_reply = await client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # the client asks base64
            float_reply = await client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0], encoding_format="float")
            wrong_model = await http.post("/embeddings", json={"model": "tiny", "input": "x"})
            bad_input = await http.post("/embeddings", json={"model": "all-MiniLM-L6-v2", "input": [1, 2]})
            return models, base64_reply, float_reply, wrong_model, bad_input

        models, base64_reply, float_reply, wrong_model, bad_input = call(app, work)
    finally:
        engine.shutdown()
    assert models == ["tiny", "all-MiniLM-L6-v2"]
    expected = embedder.embed(texts)
    got = np.array([d.embedding for d in sorted(base64_reply.data, key=lambda d: d.index)])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(float_reply.data[0].embedding, expected[0], atol=1e-6)
    assert base64_reply.usage.prompt_tokens == sum(embedder.count_tokens(t) for t in texts) > 0
    assert wrong_model.status_code == 400 and wrong_model.json()["error"]["code"] == "model_not_found"
    assert bad_input.status_code == 400


def test_without_an_embedder_the_route_says_how_to_get_one(tmp_path):
    engine = AsyncEngine(Engine.from_run(make_server_run(tmp_path / "run"), max_batch=1))
    try:
        async def work(client, http):
            return await http.post("/embeddings", json={"model": "x", "input": "hi"})

        response = call(create_app(engine, "tiny"), work)
    finally:
        engine.shutdown()
    assert response.status_code == 404 and "--embedder default" in response.json()["error"]["message"]
