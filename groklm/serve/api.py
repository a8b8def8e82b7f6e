"""The OpenAI-compatible HTTP server: routes, limits, keys, errors.

    GET  /                      the chat page (static/index.html)
    GET  /health                liveness and load: requests in flight, running, waiting
    GET  /v1/models             the one model this server serves
    POST /v1/chat/completions   chat, whole or streamed (Server-Sent Events); tools; response_format
    POST /v1/completions        continue a prompt (a string or token ids, or a list of them)
    POST /v1/embeddings         text -> vectors, when the server has an embedder (--embedder)
    POST /v1/feedback           thumbs up/down (and a correction) on a chat completion, by its id

With a trace store (`recorder`, given by `groklm serve` unless --no-traces), every chat
completion is recorded once it is complete: its id, messages, replies, model, usage and
latency. Recording happens after the reply has gone out (a background task, or after the
stream's last event) and a failure is logged, never the client's problem. Feedback is stored
with the completion's trace; an id the store does not know is a 404 naming `completion_id`.

Every request is one or more engine requests in the continuously batched decode loop
(`AsyncEngine`), so many clients share each forward pass. Streams are Server-Sent Events: one
`data: {chunk}` per piece of text, then `data: [DONE]`. A client that goes away mid-request
has its engine requests cancelled at once, freeing their slots.

Every error has OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 for a
bad request (a field out of range, malformed JSON, an unknown model, a prompt longer than the
context), 401 for a missing or wrong key (when the server has one), 413 for a body over the
limit, 429 when every slot and the waiting line are full. A 400 names the field at fault
(`param`) where there is one. A model whose logits for one request stop being numbers fails
that request alone, with a 500 that says so; otherwise only a bug in the server gives a 500,
with a generic message; the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException

from groklm.errors import GroklmError
from groklm.infer.engine import AsyncEngine, EngineBusy
from groklm.infer.sampling import NonFiniteLogits
from groklm.infer.tool_calls import ReplyParser
from groklm.serve.generation import (
    ChatStream,
    ChoiceState,
    CompletionStream,
    chat_jobs,
    completion_jobs,
    run_jobs,
    sse,
)
from groklm.serve.schemas import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    FeedbackRequest,
)

log = logging.getLogger("groklm.serve")
STATIC = Path(__file__).parent / "static"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}
# The page may talk to this server only: no scripts, styles or connections from elsewhere.
PAGE_POLICY = "default-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
CLIENT_GONE = 499  # nginx's "client closed request": nobody reads it, the log shows it


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    error = {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


# ---- limits that apply before a request reaches a route ----------------------------------------


class RequireKey:
    """ASGI middleware: every route but the page and /health needs `Authorization: Bearer KEY`
    (deny by default, so a route added later is covered too). The comparison takes the same
    time whatever the guess, so timing does not leak how much of a key was right."""

    OPEN = ("/", "/health")

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "http" and path not in self.OPEN and not path.startswith("/static/"):
            header = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, given = header.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(given.strip(), self.key):
                message = "missing or wrong API key: send the header 'Authorization: Bearer KEY'"
                response = error_response(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class LimitBody:
    """ASGI middleware: refuse bodies over `max_bytes` (413), by their Content-Length and by
    what actually arrives (a chunked upload has no length), before any of it is parsed."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                return await self._refuse(scope, receive, send)
            if not message.get("more_body"):
                break
        first = {"type": "http.request", "body": bytes(body), "more_body": False}

        async def replay():  # the body we read, then the client's later messages (disconnect)
            nonlocal first
            if first is not None:
                message, first = first, None
                return message
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        message = f"the request body is over this server's limit of {self.max_bytes} bytes"
        await error_response(413, message, code="body_too_large", headers={"Connection": "close"})(scope, receive, send)


# ---- errors -------------------------------------------------------------------------------------


def validation_error(exc: RequestValidationError) -> JSONResponse:
    """Pydantic's complaint about a body -> a 400 that names the field."""
    error = exc.errors()[0]
    path = [str(part) for part in error["loc"] if part != "body"]
    param = path[0] if path else None
    kind = error["type"]
    if kind == "json_invalid":
        param = None  # pydantic's location is a character offset, not a field
        message = f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
    elif kind == "missing" and not path:
        message = "the request needs a JSON object body"
    elif kind == "extra_forbidden":
        message = f"{'.'.join(path)}: unrecognized or unsupported request argument"
    elif kind == "model_attributes_type" and not path:
        message = "the body must be a JSON object"
    else:
        said = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for our own validators' words
        message = f"{'.'.join(path)}: {said}" if path else said
        if kind.endswith("_type") and "input" in error:  # strict types: say what came instead
            message += f", got {json_kind(error['input'])}"
    return error_response(400, message, param, kind)


def json_kind(value) -> str:
    """What a JSON value is, in JSON's words: "a string", "a boolean", "null"..."""
    kinds = [(bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "an array"), (dict, "an object")]
    return "null" if value is None else next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        return validation_error(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):  # unknown route, wrong method
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(EngineBusy)
    async def busy(request: Request, exc: EngineBusy):
        return error_response(429, str(exc), code="engine_busy", headers={"Retry-After": "1"})

    @app.exception_handler(GroklmError)
    async def bad_request(request: Request, exc: GroklmError):  # ConfigError, DataError, TokenizerError
        return error_response(400, str(exc), code=type(exc).__name__)

    @app.exception_handler(NonFiniteLogits)
    async def model_failed(request: Request, exc: NonFiniteLogits):  # this request's row, not the client's fault
        log.error("a request failed in the engine: %s", exc)
        return error_response(500, str(exc), code="non_finite_logits")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):  # Starlette logs the traceback after this returns
        return error_response(500, "internal server error; the server log has the details")


# ---- the app ------------------------------------------------------------------------------------


async def until_disconnected(request: Request) -> None:
    """Return when the client closes its connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work):
    """Await `work`; if the client goes away first, cancel it (freeing its engine slots) and
    return None."""
    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # let its cleanup cancel the engine requests
    return None if task.cancelled() else task.result()


def create_app(engine: AsyncEngine, model_name: str, api_key: str | None = None,
               max_body_bytes: int = 1 << 20, embedder=None, recorder=None) -> FastAPI:
    """The server for one model. `engine` runs the batch; the app shuts it down on exit.
    `embedder` (a groklm.apps.rag.embed.Embedder), if given, answers /v1/embeddings.
    `recorder` (a groklm.apps.tracing.Tracer: `record_completion`, `record_feedback`), if given,
    records every chat completion and takes /v1/feedback; the command passes it in, as it does
    the embedder, because serve/ sits below apps/."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        engine.shutdown()

    # No /docs: Swagger's page loads its scripts from a CDN, and this server works offline.
    app = FastAPI(title="groklm", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    add_error_handlers(app)
    app.add_middleware(LimitBody, max_bytes=max_body_bytes)
    if api_key:
        app.add_middleware(RequireKey, key=api_key)  # added last: runs first, before the body is read
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    started = int(time.time())
    counters = {"requests": 0, "disconnects": 0}
    card = {"id": model_name, "object": "model", "created": started, "owned_by": "groklm",
            "context_length": engine.engine.block_size}
    cards = [card]
    if embedder is not None:
        embedder_name = embedder.identity["model"]
        cards.append({"id": embedder_name, "object": "model", "created": started, "owned_by": "groklm",
                      "context_length": embedder.max_tokens, "dimensions": embedder.dim})
        embedding_lock = threading.Lock()  # one batch at a time: memory stays bounded

    def check_model(name: str) -> None:
        if name != model_name:
            raise ApiError(400, f"model {name!r} is not served here; this server serves {model_name!r}",
                           "model", "model_not_found")

    def record(builder, messages: list, started: float) -> None:
        """Store a finished chat completion; runs after the reply went out, off the event loop."""
        try:
            replies = [{"role": "assistant", "content": s.content,
                        **({"tool_calls": [c.to_openai() for c in s.calls]} if s.calls else {})} for s in builder.states]
            recorder.record_completion(builder.id, model_name, messages, replies, builder.usage(),
                                       [s.finish_reason for s in builder.states], started, time.time())
        except Exception:  # noqa: BLE001 - recording watches the server and must never break it
            log.exception("could not record completion %s", builder.id)

    async def respond(request: Request, jobs, builder, stream: bool, include_usage: bool, messages: list | None = None):
        """Run the jobs; answer with the whole object or an event stream of chunks. A chat
        request's `messages` are recorded with its replies when the server has a recorder."""
        counters["requests"] += 1
        started = time.time()
        recording = recorder is not None and messages is not None
        merged = run_jobs(engine, jobs)

        async def collect():
            async for index, delta in merged:
                builder.states[index].add(delta)
            return builder.whole()

        if not stream:
            whole = await unless_disconnected(request, collect())
            if whole is None:
                counters["disconnects"] += 1
                return Response(status_code=CLIENT_GONE)
            return JSONResponse(whole, background=BackgroundTask(record, builder, messages, started) if recording else None)
        # The first delta comes before the 200: a full engine or a bad prompt still gets a real
        # status code instead of an error in the middle of a stream.
        try:
            first = await unless_disconnected(request, anext(merged))
        except BaseException:
            await merged.aclose()
            raise
        if first is None:
            counters["disconnects"] += 1
            await merged.aclose()
            return Response(status_code=CLIENT_GONE)
        after = (lambda: asyncio.to_thread(record, builder, messages, started)) if recording else None
        return StreamingResponse(events(merged, first, builder, include_usage, after), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def events(merged, first, builder, include_usage: bool, after=None):
        """The stream's events; `after()`, if given, is awaited once the whole reply has gone out."""
        finished = False
        try:
            if isinstance(builder, ChatStream):
                yield sse(builder.opening(include_usage))
            index, delta = first
            while True:
                for chunk in builder.delta_chunks(index, delta, include_usage):
                    yield sse(chunk)
                try:
                    index, delta = await anext(merged)
                except StopAsyncIteration:
                    break
            if include_usage:
                yield sse(builder.usage_chunk())
            yield sse("[DONE]")
            finished = True
            if after is not None:
                await after()
        except Exception as exc:  # headers are sent: the error can only travel inside the stream
            log.exception("stream failed")
            # A GroklmError's message is written for the user; anything else may hold internals.
            message = str(exc) if isinstance(exc, GroklmError) else "internal server error; the server log has the details"
            yield sse({"error": {"message": message, "type": "server_error", "param": None, "code": None}})
        finally:
            if not finished:
                counters["disconnects"] += 1
            await merged.aclose()  # cancels whatever is still running: the client is gone

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "in_flight": engine.in_flight,
                "running": len(engine.engine.active), "waiting": len(engine.engine.waiting),
                "capacity": engine.capacity, **counters}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{name}")
    async def model(name: str):
        for found in cards:
            if found["id"] == name:
                return found
        raise ApiError(404, f"model {name!r} is not served here", "model", "model_not_found")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        check_model(body.model)
        jobs, tools = await chat_jobs(body, engine)
        states = [ChoiceState(ReplyParser(tools), body.parallel_tool_calls) for _ in jobs]
        builder = ChatStream(model_name, states, len(jobs[0].prompt), body.logprobs)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await respond(request, jobs, builder, body.stream, include_usage, body.messages)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model)
        jobs, prompt_tokens = completion_jobs(body, engine)
        builder = CompletionStream(model_name, len(jobs), prompt_tokens, body.logprobs is not None)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await respond(request, jobs, builder, body.stream, include_usage)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest):
        if embedder is None:
            raise ApiError(404, "this server has no embedding model; start it with `groklm serve RUN --embedder default`",
                           "model", "model_not_found")
        if body.model != embedder_name:
            raise ApiError(400, f"model {body.model!r} is not served here; the embedding model is {embedder_name!r}",
                           "model", "model_not_found")
        texts = [body.input] if isinstance(body.input, str) else body.input

        def embed():
            with embedding_lock:
                return embedder.embed(texts), sum(embedder.count_tokens(t) for t in texts)

        vectors, tokens = await asyncio.to_thread(embed)  # off the event loop: streams keep flowing
        data = [{"object": "embedding", "index": i, "embedding": encode_vector(v, body.encoding_format)}
                for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": embedder_name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackRequest):
        if recorder is None:
            raise ApiError(404, "this server records no completions (started with --no-traces), so it takes no feedback",
                           "completion_id", "traces_off")
        known = await asyncio.to_thread(recorder.find_trace, body.completion_id)
        if known is None:
            raise ApiError(404, f"no completion {body.completion_id!r} is recorded on this server", "completion_id",
                           "completion_not_found")
        verdict = await asyncio.to_thread(recorder.record_feedback, known, body.rating, body.correction)
        return {"object": "feedback", "completion_id": body.completion_id, "trace_id": verdict.trace_id,
                "rating": verdict.rating, "correction": verdict.correction}

    return app


def encode_vector(vector, encoding_format: str):
    """A vector as OpenAI sends it: a list of floats, or base64 of little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.tolist()
