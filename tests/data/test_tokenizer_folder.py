"""The student's tokenizer folder must hold a real tokenizer: not none, not one of special tokens only."""
import shutil

import pytest
import tokenizers

from embed_jax.assets import minilm_path
from embed_jax.data import pipeline
from embed_jax.data.pipeline import PipelineConfigError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_tokenizer_of_special_tokens_only_is_refused(tmp_path):
    """The tokenizer.json transformers writes for a folder without a vocabulary: its 5 special tokens."""
    vocabulary = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocabulary, unk_token="[UNK]"))
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(PipelineConfigError, match=rf"data.tokenizer='{tmp_path}': the tokenizer in "
                                                  r".*tokenizer.json has 5 tokens, all of them special tokens"):
        pipeline.load_tokenizer(str(tmp_path), 64)


def test_folder_with_a_vocabulary_but_no_tokenizer_json_names_what_it_found(tmp_path):
    shutil.copy(minilm_path() / "vocab.txt", tmp_path / "vocab.txt")
    with pytest.raises(PipelineConfigError, match=r"has no tokenizer.json \(the one file the student's tokenizer "
                                                  r"reads; of tokenizer.json, vocab.txt, .* it has vocab.txt\)"):
        pipeline.load_tokenizer(str(tmp_path), 64)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PipelineConfigError, match=r"it has none\)"):
        pipeline.load_tokenizer(str(empty), 64)


def test_a_real_tokenizer_loads():
    tokenizer, pad_id = pipeline.load_tokenizer(str(minilm_path()), 64)
    assert tokenizer.get_vocab_size() == 30522 and pad_id == 0
