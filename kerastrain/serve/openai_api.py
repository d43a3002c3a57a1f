"""The OpenAI-compatible routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``,
``/health``, the chat page at ``/``, and vLLM's tokenizer routes (:mod:`.tokenizer_api`).

Starlette on uvicorn: the ASGI stack FastAPI itself is built on (both well kept, both already in
most Python environments that have MLflow), without FastAPI's pydantic layer: the request bodies
are checked here, and unknown fields are ignored as OpenAI ignores them. Every bad request gets
OpenAI's error object (``{"error": {"message", "type", "param", "code"}}``) with a 4xx status.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request as HTTPRequest
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from kerastrain.errors import ConfigError
from kerastrain.model.decoder import Request, Sampling
from kerastrain.serve.engine import BatchingEngine, tokens
from kerastrain.serve.tokenizer_api import tokenizer_routes

PAGE = Path(__file__).with_name("chat.html")


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None,
                 status: int = 400, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.param, self.code, self.status, self.kind = param, code, status, kind


def error(exc: BadRequest) -> JSONResponse:
    body = {"message": str(exc), "type": exc.kind, "param": exc.param, "code": exc.code}
    return JSONResponse({"error": body}, status_code=exc.status)


@dataclass
class Served:
    """What the server serves: the model's name, its tokenizer, template and decoding engine."""

    name: str
    tokenizer: object
    template: object
    engine: BatchingEngine
    api_key: str | None = None


def _number(body, key, default, kind=float, low=None, high=None):
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise BadRequest(f"'{key}' must be a {'number' if kind is float else 'integer'}", key)
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadRequest(f"'{key}' must be between {low} and {high}", key)
    return kind(value)


class Call:
    """One completion request, read and checked: sampling, limits, stops, log-prob options."""

    def __init__(self, served: Served, body, chat: bool) -> None:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        if body.get("model") != served.name:
            raise BadRequest(f"The model '{body.get('model')}' does not exist; this server serves "
                             f"'{served.name}'", "model", "model_not_found", status=404)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        self.max_tokens = _number({"max_tokens": limit}, "max_tokens", None if chat else 16, int)
        if self.max_tokens is not None and self.max_tokens < 1:
            raise BadRequest("'max_tokens' must be at least 1", "max_tokens")
        self.n = _number(body, "n", 1, int, 1, 16)
        temperature = _number(body, "temperature", 1.0, float, 0, 2)
        top_p = _number(body, "top_p", None, float, 0, 1)
        seed = _number(body, "seed", None, int)
        try:
            nucleus = None if top_p is None else max(top_p, 1e-9)  # top_p 0: the top token only
            self.samplings = [Sampling(temperature, None, nucleus,
                                       None if seed is None else seed + i) for i in range(self.n)]
        except ConfigError as exc:
            raise BadRequest(str(exc)) from exc
        stop = body.get("stop") or []
        self.stop = [stop] if isinstance(stop, str) else stop
        if not all(isinstance(s, str) for s in self.stop):
            raise BadRequest("'stop' must be a string or a list of strings", "stop")
        self.stream = bool(body.get("stream"))
        self.usage_in_stream = bool((body.get("stream_options") or {}).get("include_usage"))
        if chat:
            self.logprobs = bool(body.get("logprobs"))
            self.top = _number(body, "top_logprobs", 0, int, 0, 20) if self.logprobs else 0
        else:
            self.logprobs = body.get("logprobs") is not None
            self.top = _number(body, "logprobs", 0, int, 0, 5) if self.logprobs else 0
        self.echo = bool(body.get("echo")) and not chat

    def requests(self, prompt_ids: list[int], stop_ids, seq_len: int) -> list[Request]:
        if len(prompt_ids) >= seq_len or not prompt_ids:
            raise BadRequest(f"This model's maximum context length is {seq_len} tokens; the prompt "
                             f"has {len(prompt_ids)} (it needs at least one free position)",
                             "messages", "context_length_exceeded")
        most = seq_len - len(prompt_ids) if self.max_tokens is None else self.max_tokens
        return [Request(list(prompt_ids), most, s, tuple(stop_ids), self.top, self.echo)
                for s in self.samplings]


class Text:
    """A choice's decoded text as it grows: stop ids are not shown, a stop string ends it, and a
    character split over byte-level tokens is held back until whole."""

    def __init__(self, tokenizer, stop_ids, stop: list[str]) -> None:
        self.tokenizer, self.stop_ids, self.stop = tokenizer, set(stop_ids), stop
        self.ids: list[int] = []
        self.shown = ""  # what has been streamed
        self.full = ""  # the whole text so far, cut at a stop string
        self.finish: str | None = None

    def add(self, token_id: int) -> str:
        """The new text this token shows (may be empty)."""
        if self.finish:
            return ""
        if token_id in self.stop_ids:
            self.finish = "stop"
            return ""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids)
        cut = [text.find(s) for s in self.stop if s and s in text]
        if cut:
            text, self.finish = text[: min(cut)], "stop"
        self.full = text
        if text.endswith("\ufffd") or not text.startswith(self.shown):
            return ""
        piece, self.shown = text[len(self.shown):], text
        return piece

    def rest(self) -> str:
        """What was held back and never shown (an incomplete character at the end)."""
        piece = self.full[len(self.shown):] if self.full.startswith(self.shown) else ""
        self.shown = self.full
        return piece


def _token_entry(tokenizer, token_id: int, logprob: float) -> dict:
    text = tokenizer.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def _chat_logprobs(tokenizer, token) -> dict:
    entry = _token_entry(tokenizer, token.id, token.logprob)
    entry["top_logprobs"] = [_token_entry(tokenizer, i, lp) for i, lp in token.top]
    return entry


def build_app(served: Served) -> Starlette:
    tokenizer, engine = served.tokenizer, served.engine
    seq_len = engine.decoder.seq_len
    eos = getattr(tokenizer, "eos_id", None)
    eos_ids = () if eos is None else (eos,)

    async def read(http: HTTPRequest, body: bool = True):
        """The request's JSON body (``body=False``: only check the API key)."""
        if served.api_key and http.headers.get("authorization") != f"Bearer {served.api_key}":
            raise BadRequest("Incorrect API key provided", None, "invalid_api_key", 401,
                             "authentication_error")
        if not body:
            return None
        try:
            return json.loads(await http.body())
        except ValueError as exc:
            raise BadRequest(f"the request body is not valid JSON ({exc})") from exc

    async def chat_completions(http: HTTPRequest):
        body = await read(http)
        call = Call(served, body, chat=True)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise BadRequest("'messages' must be a non-empty list of {role, content} objects",
                             "messages")
        if served.template is None:
            raise BadRequest("this model was trained on plain text and has no chat template; "
                             "use /v1/completions")
        text = served.template.render([{"role": m.get("role", "user"), "content": m["content"]}
                                       for m in messages], add_generation_prompt=True)
        prompt = tokenizer.encode_batch([text])[0]
        stop_ids = served.template.turn_end_ids(tokenizer)
        requests = call.requests(prompt, stop_ids, seq_len)
        texts = [Text(tokenizer, stop_ids, call.stop) for _ in requests]
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": ident, "created": created, "model": served.name}

        def usage():
            done = sum(len(r.new) for r in requests)
            return {"prompt_tokens": len(prompt), "completion_tokens": done,
                    "total_tokens": len(prompt) + done}

        def finish(i):
            return texts[i].finish or requests[i].finish_reason or "length"

        if call.stream:
            async def events():
                for i in range(len(requests)):
                    yield _sse({**head, "object": "chat.completion.chunk", "choices": [
                        {"index": i, "delta": {"role": "assistant", "content": ""},
                         "finish_reason": None}]})
                async for i, token in _until_stopped(tokens(engine, requests), texts):
                    piece = texts[i].add(token.id)
                    if texts[i].finish and not piece:
                        continue
                    choice = {"index": i, "delta": {"content": piece} if piece else {},
                              "finish_reason": None}
                    if call.logprobs:
                        choice["logprobs"] = {"content": [_chat_logprobs(tokenizer, token)]}
                    if piece or call.logprobs:
                        yield _sse({**head, "object": "chat.completion.chunk", "choices": [choice]})
                for i in range(len(requests)):
                    rest = texts[i].rest()
                    yield _sse({**head, "object": "chat.completion.chunk", "choices": [
                        {"index": i, "delta": {"content": rest} if rest else {},
                         "finish_reason": finish(i)}]})
                if call.usage_in_stream:
                    yield _sse({**head, "object": "chat.completion.chunk", "choices": [],
                                "usage": usage()})
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        logprobs: list[list] = [[] for _ in requests]
        async for i, token in _until_stopped(tokens(engine, requests), texts):
            texts[i].add(token.id)
            if token.id not in texts[i].stop_ids:
                logprobs[i].append(_chat_logprobs(tokenizer, token))
        choices = [{"index": i, "message": {"role": "assistant", "content": texts[i].full},
                    "logprobs": {"content": logprobs[i]} if call.logprobs else None,
                    "finish_reason": finish(i)} for i in range(len(requests))]
        return JSONResponse({**head, "object": "chat.completion", "choices": choices,
                             "usage": usage()})

    async def completions(http: HTTPRequest):
        body = await read(http)
        call = Call(served, body, chat=False)
        prompts = body.get("prompt", "")
        if isinstance(prompts, str) or (prompts and all(isinstance(t, int) for t in prompts)):
            prompts = [prompts]
        if not isinstance(prompts, list) or not prompts:
            raise BadRequest("'prompt' must be a string, a list of strings or of token lists",
                             "prompt")
        jobs = []  # (prompt ids, request, text): every prompt checked before any is decoded
        for prompt in prompts:
            if isinstance(prompt, str):
                ids = tokenizer.encode_batch([prompt])[0]
            elif isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
                ids = prompt
            else:
                raise BadRequest("each prompt must be a string or a list of token ids", "prompt")
            jobs += [(ids, r, Text(tokenizer, eos_ids, call.stop))
                     for r in call.requests(ids, eos_ids, seq_len)]
        requests, texts = [j[1] for j in jobs], [j[2] for j in jobs]
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": served.name}

        def usage():
            prompt_total = sum(len(ids) for ids, *_ in jobs[::call.n])
            done = sum(len(r.new) for r in requests)
            return {"prompt_tokens": prompt_total, "completion_tokens": done,
                    "total_tokens": prompt_total + done}

        def chunk(i, text, finish=None):
            return _sse({**head, "choices": [{"index": i, "text": text, "logprobs": None,
                                              "finish_reason": finish}]})

        if call.stream:
            async def events():
                for i, (ids, _, _) in enumerate(jobs if call.echo else []):
                    yield chunk(i, tokenizer.decode(ids))
                # All prompts decode together: they share the decoder's batched steps.
                async for i, token in _until_stopped(tokens(engine, requests), texts):
                    piece = texts[i].add(token.id)
                    if piece:
                        yield chunk(i, piece)
                for i, (_, request, text) in enumerate(jobs):
                    yield chunk(i, text.rest(), text.finish or request.finish_reason or "length")
                if call.usage_in_stream:
                    yield _sse({**head, "choices": [], "usage": usage()})
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        async for i, token in _until_stopped(tokens(engine, requests), texts):
            texts[i].add(token.id)
        choices = [_completion_choice(tokenizer, call, ids, request, text, i)
                   for i, (ids, request, text) in enumerate(jobs)]
        return JSONResponse({**head, "choices": choices, "usage": usage()})

    async def models(http: HTTPRequest):
        await read(http, body=False)
        return JSONResponse({"object": "list", "data": [
            {"id": served.name, "object": "model", "created": 0, "owned_by": "kerastrain"}]})

    async def health(http: HTTPRequest):
        return JSONResponse({"status": "ok", "model": served.name})

    async def page(http: HTTPRequest):
        return HTMLResponse(PAGE.read_text(encoding="utf-8").replace("{{MODEL}}", served.name))

    async def bad_request(http, exc):
        return error(exc)

    routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/models", models), Route("/health", health), Route("/", page),
              *tokenizer_routes(served, read, BadRequest)]
    return Starlette(routes=routes, exception_handlers={BadRequest: bad_request})


async def _until_stopped(stream, texts):
    """The engine's tokens until every choice's text is finished (a stop string ends a choice
    before its decoder does: leaving the stream then frees the slots)."""
    async for i, token in stream:
        if texts[i].finish:
            if all(t.finish for t in texts):
                return
            continue
        yield i, token
        if all(t.finish for t in texts):
            return


def _completion_choice(tokenizer, call, ids, request, text, index) -> dict:
    kept = request.new[: len(text.ids)]  # not the stop id
    prompt_text = tokenizer.decode(ids) if call.echo else ""
    logprobs = None
    if call.logprobs:
        tokens_, lps, tops = [], [], []
        if call.echo:
            tokens_ += [tokenizer.decode([t]) for t in ids]
            lps += request.prompt_logprobs
            tops += [None] + [{tokenizer.decode([i]): lp for i, lp in top}
                              for top in request.prompt_top[1:] or [[] for _ in ids[1:]]]
        for token in kept:
            tokens_.append(tokenizer.decode([token.id]))
            lps.append(token.logprob)
            tops.append({tokenizer.decode([i]): lp for i, lp in token.top})
        offsets, at = [], 0
        for t in tokens_:
            offsets.append(at)
            at += len(t)
        logprobs = {"tokens": tokens_, "token_logprobs": lps, "top_logprobs": tops,
                    "text_offset": offsets}
    return {"index": index, "text": prompt_text + text.full, "logprobs": logprobs,
            "finish_reason": text.finish or request.finish_reason or "length"}


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"
