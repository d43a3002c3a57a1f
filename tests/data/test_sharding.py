"""Process shares of a document stream: disjoint, complete, and exact from any index."""

import itertools

import pytest

from kerastrain.config import RunConfig
from kerastrain.data.preparation import open_documents
from kerastrain.data.sharding import ProcessShare


@pytest.mark.parametrize("count,limit", [(2, 50), (3, 50), (4, None)])
def test_shares_hold_every_document_once_and_resume_exactly(count, limit):
    docs, _, _ = open_documents(RunConfig())
    whole = list(itertools.islice(docs.iter_from(0), limit or len(docs)))
    shares = [ProcessShare(docs, i, count, limit) for i in range(count)]
    seen = [list(share.iter_from(0)) for share in shares]
    assert [len(s) for s in seen] == [len(share) for share in shares]
    assert sorted(d for s in seen for d in s) == sorted(whole)  # each document exactly once
    assert seen[1] == whole[1::count]
    assert list(shares[1].iter_from(3)) == seen[1][3:]  # what resume relies on


def test_a_share_that_does_not_exist_is_refused():
    docs, _, _ = open_documents(RunConfig())
    with pytest.raises(ValueError):
        ProcessShare(docs, 2, 2)
