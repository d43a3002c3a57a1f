"""``kerastrain serve``: an OpenAI-compatible HTTP server over the one decoder, and its chat page.

``engine`` batches concurrent requests into :class:`kerastrain.model.decoder.Decoder` from one
thread; ``openai_api`` is the Starlette application (routes, request checks, OpenAI error objects,
server-sent events); ``chat.html`` is the page served at ``/``.
"""
