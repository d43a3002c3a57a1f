"""A tiny chat model trained for a few steps, served on a free port by a real uvicorn server."""

from __future__ import annotations

import pytest

from kerastrain.serve.harness import BackgroundServer
from tests.cli.test_chat_command import BPE, _chat_file
from tests.helpers import TINY, invoke


@pytest.fixture(scope="package")
def chat_run(tmp_path_factory):
    """A tiny chat model trained 2 steps: it has not learnt to stop yet, so its greedy replies
    run several tokens (what the streaming and stop tests need). Trained once for the package's
    modules in each worker (``--dist loadscope`` keeps a module on one worker)."""
    root = tmp_path_factory.mktemp("serve")
    out = root / "out"
    result = invoke("run", "--output-dir", str(out), *TINY, *BPE, "--max-steps", "2",
                    "--dataset-id", str(_chat_file(root / "chat.jsonl")), "--eval-every", "1000")
    assert result.exit_code == 0, result.output
    return out


class RunningServer(BackgroundServer):
    """``kerastrain eval --task``'s server on a free port, started now; ``stop()`` ends it."""

    def __init__(self, app) -> None:
        super().__init__(app)
        self.__enter__()

    def stop(self) -> None:
        self.__exit__(None, None, None)


@pytest.fixture(scope="module")
def served(chat_run):
    from kerastrain.model.loading import chat_template_of, load
    from kerastrain.serve.engine import BatchingEngine
    from kerastrain.serve.openai_api import Served

    model, tokenizer = load(chat_run)
    return Served("tiny-chat", tokenizer, chat_template_of(chat_run), BatchingEngine(model, 4)), model


@pytest.fixture(scope="module")
def server(served):
    from kerastrain.serve.openai_api import build_app

    running = RunningServer(build_app(served[0]))
    yield running
    running.stop()
