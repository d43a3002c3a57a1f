"""The server's tokenizer over HTTP, as vLLM serves it: ``POST /tokenize``, ``POST /detokenize``,
``GET /tokenizer_info``.

EleutherAI's lm-evaluation-harness (``local-completions`` with ``tokenizer_backend=remote``)
counts context tokens with these routes: a loglikelihood task needs to know where the context
ends and the continuation starts, in the model's own tokens, and then sends token-id prompts to
``/v1/completions``. So the harness scores with our tokenizer, and needs no copy of it.
"""

from __future__ import annotations

from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse
from starlette.routing import Route


def tokenizer_routes(served, read, bad_request) -> list[Route]:
    """The three routes for ``served`` (a :class:`kerastrain.serve.openai_api.Served`);
    ``read(http)`` checks the API key and parses the JSON body, ``bad_request(message, param)``
    builds the exception the application turns into OpenAI's error object."""
    tokenizer = served.tokenizer
    seq_len = served.engine.decoder.seq_len

    async def tokenize(http: HTTPRequest):
        body = await read(http)
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object", None)
        if "messages" in body:
            if served.template is None:
                raise bad_request("this model has no chat template; send 'prompt'", "messages")
            text = served.template.render(body["messages"], add_generation_prompt=bool(
                body.get("add_generation_prompt", True)))
        else:
            text = body.get("prompt")
            if not isinstance(text, str):
                raise bad_request("'prompt' must be a string", "prompt")
        # Our tokenizers add no special tokens of their own: add_special_tokens changes nothing.
        ids = tokenizer.encode_batch([text])[0]
        return JSONResponse({"count": len(ids), "max_model_len": seq_len, "tokens": ids,
                             "token_strs": None})

    async def detokenize(http: HTTPRequest):
        body = await read(http)
        ids = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise bad_request("'tokens' must be a list of token ids", "tokens")
        if any(t < 0 or t >= tokenizer.vocab_size for t in ids):
            raise bad_request(f"token ids must be in [0, {tokenizer.vocab_size})", "tokens")
        return JSONResponse({"prompt": tokenizer.decode(ids)})

    async def tokenizer_info(http: HTTPRequest):
        await read(http, body=False)
        eos = getattr(tokenizer, "eos_token", None)
        return JSONResponse({
            "tokenizer_class": type(tokenizer).__name__,
            "eos_token": eos,
            "bos_token": None,  # our models start documents after an EOS, not a BOS
            "pad_token": None,
            "model_max_length": seq_len,
            "vocab_size": tokenizer.vocab_size,
            "chat_template": None if served.template is None else served.template.source,
        })

    return [Route("/tokenize", tokenize, methods=["POST"]),
            Route("/detokenize", detokenize, methods=["POST"]),
            Route("/tokenizer_info", tokenizer_info)]
