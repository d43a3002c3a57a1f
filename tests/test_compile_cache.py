"""The persistent compilation cache: on by default in the user cache folder, moved or turned off
by KERASTRAIN_COMPILE_CACHE; an unwritable folder is a one-line notice, never a failure."""

from __future__ import annotations

import jax
import pytest

from kerastrain.compile_cache import enable_compile_cache


@pytest.fixture
def jax_cache_config():
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {n: getattr(jax.config, n) for n in names}
    yield
    for n, v in saved.items():
        jax.config.update(n, v)


def test_default_moved_off_and_unwritable(tmp_path, monkeypatch, jax_cache_config):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("KERASTRAIN_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert enable_compile_cache() == tmp_path / "xdg" / "kerastrain" / "jax"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xdg" / "kerastrain" / "jax")
    monkeypatch.setenv("KERASTRAIN_COMPILE_CACHE", str(tmp_path / "moved"))
    assert enable_compile_cache() == tmp_path / "moved" and (tmp_path / "moved").is_dir()
    monkeypatch.setenv("KERASTRAIN_COMPILE_CACHE", "off")
    jax.config.update("jax_compilation_cache_dir", None)
    assert enable_compile_cache() is None and jax.config.jax_compilation_cache_dir is None
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("KERASTRAIN_COMPILE_CACHE", str(blocker / "cache"))
    notes: list[str] = []
    assert enable_compile_cache(notes.append) is None
    assert len(notes) == 1 and "cannot be written" in notes[0] and "\n" not in notes[0]
    assert jax.config.jax_compilation_cache_dir is None


def test_a_compiled_function_lands_in_the_cache(tmp_path, monkeypatch, jax_cache_config):
    from jax._src import compilation_cache  # JAX decides once per process whether to use it

    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("KERASTRAIN_COMPILE_CACHE", str(tmp_path / "cache"))
    compilation_cache.reset_cache()
    try:
        enable_compile_cache()
        # A program that compiles in milliseconds (an initializer's, say) gets an entry too.
        jax.jit(lambda x: x * 3 + 1)(jax.numpy.arange(7.0)).block_until_ready()
        assert any((tmp_path / "cache").iterdir())
    finally:
        compilation_cache.reset_cache()
