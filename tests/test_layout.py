"""The package's shape: documented public names import, imports run one way, no cycles.

Layers, lowest first: the core (top-level modules), then ``data``, ``model`` and ``storage``, then
``training`` and ``serve``, then ``cli``. A module may import its own layer's or a lower layer's modules only.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import kerastrain

PACKAGE = Path(kerastrain.__file__).parent
LAYER = {"data": 1, "model": 1, "storage": 1, "training": 2, "serve": 2, "cli": 3}
# Thin re-exports that keep documented paths working; they point up on purpose.
# kerastrain.testing (the pytest plugin) drives the command line as a user does, so it may too.
FACADES = {"kerastrain", "kerastrain.__main__", "kerastrain.sources", "kerastrain.testing"}
# Within layer 1, model may read data (a model is loaded with its tokenizer); nothing else crosses.
ALLOWED_PEERS = {("model", "data")}

PUBLIC = {
    "kerastrain": ["load", "__version__"],
    "kerastrain.hookspecs": ["hookimpl", "hookspec"],
    "kerastrain.errors": ["UserError", "ConfigError", "DataError", "StorageError", "CheckpointError",
                          "PluginError"],
    "kerastrain.testing": ["kerastrain_plugin"],
    "kerastrain.sources": ["Documents", "SourceRequest", "DataSource", "DecodeErrorCounter",
                           "parse_dataset_id"],
    "kerastrain.storage": ["StorageBackend", "StorageURL", "LocalStorage", "DEFAULT_PART_SIZE",
                           "translated_errors", "redact_logs", "parse_url", "backend_for"],
    "kerastrain.plugins": ["get_plugin_manager"],
    "kerastrain.cli": ["cli", "main"],
    "kerastrain.config": ["RunConfig", "ModelConfig"],
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every kerastrain module ``name`` imports, at module level or inside functions."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def _layer(module: str) -> tuple[int, str]:
    parts = module.split(".")
    sub = parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYER) else ""
    return LAYER.get(sub, 0), sub


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_documented_public_names_import(module):
    mod = importlib.import_module(module)
    for name in PUBLIC[module]:
        assert hasattr(mod, name), f"{module}.{name} is documented but missing"


def test_imports_run_one_way():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        if name in FACADES:
            continue
        rank, sub = _layer(name)
        for target in _imports(name, path, set(modules)):
            t_rank, t_sub = _layer(target)
            if target == f"kerastrain.{t_sub}" and t_sub:  # a package __init__ re-export
                t_rank, t_sub = LAYER[t_sub], t_sub
            upward = t_rank > rank
            sideways = t_rank == rank and t_sub != sub and (sub, t_sub) not in ALLOWED_PEERS
            if upward or (rank > 0 and sideways):
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    modules = _modules()
    graph = {n: _imports(n, p, set(modules)) - {"kerastrain"} for n, p in modules.items()
             if n not in FACADES}
    # A package's __init__ re-exporting its own modules is not a cycle.
    for n in graph:
        graph[n] = {t for t in graph[n] if not (t.startswith(n + ".") or n.startswith(t + "."))}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# The packages whose __init__ selects the JAX backend (kerastrain/__init__.py sets nothing, so that
# pytest loading kerastrain.testing leaves other projects' backend alone).
SELECTS_BACKEND = ("kerastrain.model", "kerastrain.training")


def test_keras_is_imported_only_where_the_jax_backend_is_selected():
    outside = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n.split(".")[0] in ("keras", "keras_hub", "keras_nlp") for n in names) and \
                    not name.startswith(tuple(p + "." for p in SELECTS_BACKEND)):
                outside.append(name)
    assert not outside, f"modules that import Keras outside {SELECTS_BACKEND}: {sorted(set(outside))}"
    for package in SELECTS_BACKEND:
        init = PACKAGE.parent.joinpath(*package.split("."), "__init__.py").read_text()
        assert 'os.environ.setdefault("KERAS_BACKEND", "jax")' in init, package
