"""Process shares of a document stream (and Grain's worker slices of a share): disjoint,
complete, and exact from any saved position."""

import itertools

import pytest

from kerastrain.config import RunConfig
from kerastrain.data.grain_source import DocumentSource
from kerastrain.data.preparation import open_documents


def _docs(source):
    return [e["doc"] for e in source.__iter__()]


@pytest.mark.parametrize("count,limit", [(2, 50), (3, 50), (4, None)])
def test_shares_hold_every_document_once_and_resume_exactly(count, limit):
    docs, _, _ = open_documents(RunConfig())
    whole = list(itertools.islice(docs.iter_from(0), limit or len(docs)))
    seen = [_docs(DocumentSource(docs, limit=limit, start=i, step=count)) for i in range(count)]
    assert sorted(d for s in seen for d in s) == sorted(whole)  # each document exactly once
    assert seen[1] == whole[1::count]
    it = DocumentSource(docs, limit=limit, start=1, step=count).__iter__()
    for _ in range(3):
        next(it)
    rest = DocumentSource(docs, limit=limit, start=1, step=count).__iter__()
    rest.set_state(it.get_state())
    assert [e["doc"] for e in rest] == seen[1][3:]  # what resume relies on


def test_grains_worker_slices_split_a_share():
    docs, _, _ = open_documents(RunConfig())
    whole = list(itertools.islice(docs.iter_from(0), 60))
    shares = []
    for worker in range(2):  # process 1 of 3, worker `worker` of 2 (Grain's set_slice)
        source = DocumentSource(docs, limit=60, start=1, step=3)
        source.set_slice(slice(worker, None, 2))
        shares.append(_docs(source))
    assert shares == [whole[1::6], whole[4::6]]
