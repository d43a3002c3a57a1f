"""Weighted mixtures: shares follow the weights, draws resume exactly, exhaustion modes."""

import hashlib
import itertools

import pytest

from kerastrain.data.corpus import InMemoryDocuments
from kerastrain.data.mixture import MixtureDocuments
from kerastrain.data.pipeline import StreamingTextPipeline
from kerastrain.data.tokenizer import ByteTokenizer
from kerastrain.errors import DataError

WEB = InMemoryDocuments([f"web {i} " + "w " * (i % 9) for i in range(400)])
CODE = InMemoryDocuments([f"code {i} " + "c " * (i % 5) for i in range(60)])


def mix(on_exhausted="end-epoch", seed=7):
    return MixtureDocuments([WEB, CODE], [3.0, 1.0], seed=seed, on_exhausted=on_exhausted,
                            names=["web", "code"])


def test_shares_follow_the_weights_and_the_draws_are_a_function_of_the_seed():
    docs = list(itertools.islice(mix("restart").iter_from(0), 2000))
    code = sum(d.startswith("code") for d in docs) / len(docs)
    assert abs(code - 0.25) < 0.03
    assert docs == list(itertools.islice(mix("restart").iter_from(0), 2000))
    assert docs != list(itertools.islice(mix("restart", seed=8).iter_from(0), 2000))
    # Each source is read in its own order: the mixture interleaves, it never reorders.
    assert [d for d in docs if d.startswith("web")][:300] == list(WEB.iter_from(0))[:300]


@pytest.mark.parametrize("mode", ["end-epoch", "restart", "drop"])
def test_resume_from_any_position_continues_the_same_draws(mode):
    m = mix(mode)
    full = list(itertools.islice(m.iter_positioned(None), 600))
    for cut in (0, 1, 57, 233, len(full) - 2):
        rest = [d for d, _ in itertools.islice(m.iter_positioned(full[cut][1]), 600 - cut - 1)]
        assert rest == [d for d, _ in full[cut + 1:]], cut


def test_exhaustion_stop_restart_drop():
    stop = list(mix("end-epoch").iter_positioned(None))
    # Every code document was drawn, then a draw of code found none: the mixture ended there.
    assert stop[-1][1]["taken"] == [len(stop) - len(CODE), len(CODE)]
    assert len(stop) < len(WEB) + len(CODE)
    drop = list(mix("drop").iter_from(0))
    assert sorted(drop) == sorted(list(WEB.iter_from(0)) + list(CODE.iter_from(0)))
    restart = list(itertools.islice(mix("restart").iter_positioned(None), 1000))
    position = restart[-1][1]
    assert position["laps"][1] >= 2 and position["done"] == [False, False]
    shares = mix("restart").shares(position)
    assert abs(shares["code"] - 0.25) < 0.04 and abs(sum(shares.values()) - 1) < 1e-9


def test_bad_mixtures_are_one_line_errors():
    with pytest.raises(DataError, match="one weight per dataset"):
        MixtureDocuments([WEB, CODE], [1.0])
    with pytest.raises(DataError, match="positive"):
        MixtureDocuments([WEB, CODE], [1.0, 0.0])
    with pytest.raises(DataError, match="has no documents"):
        list(MixtureDocuments([WEB, InMemoryDocuments([])], [1, 1], on_exhausted="restart",
                              names=["web", "empty"]).iter_from(0))


def _digest(batch):
    return hashlib.sha1(batch.inputs.tobytes() + batch.labels.tobytes()).hexdigest()


def test_a_pipeline_over_a_mixture_resumes_exactly_and_with_2_workers(tmp_path):
    from kerastrain.data.pipeline import PipelineState
    from kerastrain.errors import ConfigError

    def pipeline(workers=1):
        return StreamingTextPipeline(mix("drop"), ByteTokenizer(), seq_len=16, batch_size=4,
                                     shuffle_buffer_size=20, seed=1, epochs=2, workers=workers)

    for workers in (1, 2):
        full = list(pipeline(workers))
        for k in (3, len(full) // 2):
            full[k].state.save(tmp_path / "state.json.gz")
            resumed = pipeline(workers)
            resumed.restore(PipelineState.load(tmp_path / "state.json.gz"))
            assert [_digest(b) for b in resumed] == [_digest(b) for b in full[k + 1:]], workers
    # Grain's workers each read their own documents: a resume with another count is refused.
    with pytest.raises(ConfigError, match="--data-workers 2"):
        pipeline(1).restore(full[3].state)


def test_the_expected_length_of_an_epoch_is_close_to_what_it_draws():
    for mode in ("end-epoch", "drop"):
        drawn = sum(1 for _ in mix(mode).iter_from(0))
        assert abs(mix(mode).expected_length() - drawn) <= 0.1 * drawn, mode
    assert mix("restart").expected_length() is None


def test_processes_share_a_tagged_mixture_and_each_share_resumes_from_its_position():
    from kerastrain.data.grain_source import DocumentSource

    tagged = MixtureDocuments([WEB, CODE], [3.0, 1.0], seed=7, on_exhausted="drop",
                              names=["web", "code"], tags=[0, 1])
    whole = list(tagged.iter_from(0))
    assert all(tag == (0 if doc.startswith("web") else 1) for tag, doc in whole)

    def share(i):
        return DocumentSource(tagged, start=i, step=2).__iter__()

    shares = [[e["doc"] for e in share(i)] for i in range(2)]
    assert shares[0] == whole[0::2] and shares[1] == whole[1::2]
    for i, items in enumerate(shares):
        cut = len(items) // 3
        first = share(i)
        for _ in range(cut + 1):
            next(first)
        assert first.get_state()["position"] is not None  # the mixture's own position
        rest = share(i)
        rest.set_state(first.get_state())
        assert [e["doc"] for e in rest] == items[cut + 1:]
