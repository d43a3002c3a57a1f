"""The Hugging Face source hands whole records to the data formats that read several columns
(``SourceRequest.records``), resumable from any index like its text documents."""

from __future__ import annotations

import json

import pytest

from kerastrain.sources import SourceRequest


@pytest.mark.parametrize("streaming", [True, False])
def test_records_are_whole_rows_and_resume_from_any_index(tmp_path, streaming):
    from kerastrain_hf.source import HFSource

    rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                          {"role": "assistant", "content": f"a{i}"}], "id": i} for i in range(7)]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    docs = HFSource().open(SourceRequest(location=str(path), streaming=streaming, records=True))
    assert list(docs.iter_from(0)) == rows
    assert list(docs.iter_from(4)) == rows[4:]
