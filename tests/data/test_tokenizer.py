"""The BPE tokenizer's batch encoding (``encode_batch_fast``) gives the ids of encoding each text."""

from kerastrain.data.tokenizer import BPETokenizer, train_byte_level_bpe

TEXTS = ["Plain prose, with commas.", "naïve café — ünïcödé 漢字 🙂", "", "  spaces  and\ttabs\n",
         "<|endoftext|> inside a text", "x" * 500]


def test_batch_ids_equal_each_text_encoded_alone():
    tok = BPETokenizer(train_byte_level_bpe(TEXTS * 10, 300))
    alone = [tok.hf.encode(text, add_special_tokens=False).ids for text in TEXTS]
    assert tok.encode_batch(TEXTS) == alone
    assert [ids for ids, _ in tok.encode_offsets(TEXTS)] == alone
