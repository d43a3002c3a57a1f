"""``kerastrain eval --task``: EleutherAI's lm-evaluation-harness scores a model through
``kerastrain serve``.

The model is served on a free local port (the same application as ``kerastrain serve``) and
lm-eval talks to it as it talks to any OpenAI-compatible server:

* ``local-completions`` for tasks that score log-likelihoods (multiple choice, perplexity) or mix
  kinds: ``/v1/completions`` with ``echo`` and ``logprobs``, prompts sent as token ids. It counts
  context tokens with the server's own tokenizer (``tokenizer_backend=remote``: vLLM's
  ``/tokenize`` routes, :mod:`kerastrain.serve.tokenizer_api`); lm-eval refuses log-likelihood
  tasks without a tokenizer (``tokenizer_backend=None`` works for generation only).
* ``local-chat-completions`` with lm-eval's ``apply_chat_template`` when every task generates
  text and the model has a chat template: the prompt goes through the model's template.

lm-eval is the optional ``eval`` extra (``lm-eval[api]``; it needs no PyTorch).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kerastrain.errors import ConfigError, DependencyError

INSTALL = "pip install 'kerastrain[eval]'"


def require_lm_eval() -> None:
    """One-line error naming the install command when the ``eval`` extra is missing."""
    try:
        import aiohttp  # noqa: F401 - lm-eval's API models need these three
        import lm_eval  # noqa: F401
        import starlette  # noqa: F401
        import tenacity  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise DependencyError(f"kerastrain eval --task needs the eval extra ({exc.name} is missing): "
                          f"{INSTALL}") from None


@dataclass
class HarnessRequest:
    """What to score: a model (a run's output directory, a checkpoint or a model folder), lm-eval
    task names or task YAML files, and how."""

    model: str
    tasks: list[str]
    limit: int | None = None  # examples per task
    num_fewshot: int | None = None
    seq_len: int = 2048  # for a Hugging Face / keras-hub folder (a run has its own)
    batch_size: int = 8  # prompts per request, decoded together
    log_samples: bool = False


class BackgroundServer:
    """The app on uvicorn in a thread, on a free port of 127.0.0.1, while the ``with`` lasts."""

    def __init__(self, app) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="kerastrain-serve",
                                       daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise ConfigError(f"the evaluation server did not start on port {self.port}")
            time.sleep(0.05)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _rebased(files, folder: Path):
    """``data_files`` with relative paths that exist beside the YAML made absolute."""
    if isinstance(files, str):
        path = Path(files).expanduser()
        return str(folder / path) if not path.is_absolute() and (folder / path).exists() else files
    if isinstance(files, list):
        return [_rebased(f, folder) for f in files]
    if isinstance(files, dict):
        return {split: _rebased(f, folder) for split, f in files.items()}
    return files


def task_specs(names: list[str], task_manager) -> tuple[list, list[str | None]]:
    """What lm-eval's ``simple_evaluate`` takes for each ``--task`` (a name, or a YAML file's
    config with its local data files found beside it) and each task's output type (None for a
    group or a Python-defined task)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    specs, kinds = [], []
    for name in names:
        if name.endswith((".yaml", ".yml")):
            path = Path(name)
            if not path.is_file():
                raise ConfigError(f"--task {name}: no such task file")
            config = load_yaml(path, resolve_func=True)
            kwargs = config.get("dataset_kwargs") or {}
            if "data_files" in kwargs:
                config["dataset_kwargs"] = {**kwargs, "data_files": _rebased(
                    kwargs["data_files"], path.resolve().parent)}
            specs.append(config)
            kinds.append(config.get("output_type", "generate_until"))
            continue
        if not task_manager.match_tasks([name]):
            raise ConfigError(f"--task {name}: lm-eval has no such task (`lm-eval ls tasks` lists "
                              "them); or pass a task YAML file")
        entry = task_manager.task_index.get(name)
        kind = None
        if entry is not None and entry.yaml_path is not None and entry.kind.name == "TASK":
            kind = load_yaml(entry.yaml_path, resolve_func=False).get("output_type")
        specs.append(name)
        kinds.append(kind)
    return specs, kinds


def run_tasks(request: HarnessRequest) -> dict:
    """lm-eval's results for ``request``: ``{"model", "lm_eval_model", "results": {task:
    {metric: value}}, "samples"?}``."""
    require_lm_eval()
    import lm_eval
    from lm_eval.tasks import TaskManager

    from kerastrain.model.loading import load_for_inference
    from kerastrain.serve.engine import BatchingEngine
    from kerastrain.serve.openai_api import Served, build_app

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    # lm-eval's catalogue is indexed (seconds) only when a task is named, not for YAML files.
    named = any(not name.endswith((".yaml", ".yml")) for name in request.tasks)
    task_manager = TaskManager(include_defaults=named)
    specs, kinds = task_specs(request.tasks, task_manager)
    model, tokenizer, template = load_for_inference(request.model, request.seq_len)
    name = Path(request.model).resolve().name
    seq_len = model.config.seq_len
    served = Served(name, tokenizer, template, BatchingEngine(model, request.batch_size))
    chat = template is not None and all(kind == "generate_until" for kind in kinds)
    with BackgroundServer(build_app(served)) as url:
        if chat:  # one conversation a request: lm-eval's chat model sends no batches
            lm = "local-chat-completions"
            args = {"base_url": f"{url}/v1/chat/completions", "tokenizer_backend": None}
            if getattr(tokenizer, "eos_token", None):  # a stop string besides the turn end
                args["eos_string"] = tokenizer.eos_token
        else:
            lm = "local-completions"
            args = {"base_url": f"{url}/v1/completions", "tokenizer_backend": "remote",
                    "batch_size": request.batch_size}
        args.update(model=name, max_length=seq_len, max_retries=1,
                    max_gen_toks=min(256, seq_len // 2))
        out = lm_eval.simple_evaluate(
            model=lm, model_args=args, tasks=specs, task_manager=task_manager,
            limit=request.limit, num_fewshot=request.num_fewshot, apply_chat_template=chat,
            log_samples=request.log_samples, bootstrap_iters=1000)
    results = {task: {k: v for k, v in metrics.items() if k != "alias"}
               for task, metrics in out["results"].items()}
    summary = {"model": str(request.model), "lm_eval_model": lm, "results": results}
    if request.log_samples:
        summary["samples"] = out["samples"]
    return summary
