"""Teachers the export must refuse before encoding anything: no real tokenizer, a window beyond the model's."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import kit
import torch
from transformers import AutoTokenizer, BertConfig, BertModel, RobertaConfig, RobertaModel

from embed_jax.data.tokenizer_folder import TokenizerFolderError
from embed_jax.teachers import encoders, export
from embed_jax.teachers.encoders import TeacherConfigError
from embed_jax.assets import minilm_path

@pytest.fixture(scope="module")
def bert_without_tokenizer(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bert_without_tokenizer")
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                         max_position_embeddings=128)).save_pretrained(folder)
    return folder


def test_hugging_face_folder_without_tokenizer_files_is_refused(bert_without_tokenizer):
    with pytest.raises(TokenizerFolderError, match=rf"teachers.bare.path: {bert_without_tokenizer} has no tokenizer "
                                                   r"\(looked for tokenizer.json, vocab.txt, .*\)"):
        encoders.load_teacher(encoders.TeacherSpec("bare", str(bert_without_tokenizer), "mean"))


def test_tokenizer_of_special_tokens_only_is_refused(bert_without_tokenizer, tmp_path):
    """What transformers builds for a folder without a vocabulary, saved: a tokenizer.json of 5 special tokens."""
    folder = shutil.copytree(bert_without_tokenizer, tmp_path / "bert")
    AutoTokenizer.from_pretrained(str(folder), local_files_only=True).save_pretrained(folder)
    assert (folder / "tokenizer.json").is_file()
    with pytest.raises(TokenizerFolderError, match=r"teachers.bare.path: the tokenizer in .* has 5 tokens, all of "
                                                   r"them special tokens"):
        encoders.load_teacher(encoders.TeacherSpec("bare", str(folder), "mean"))


def test_sentence_transformers_folder_without_tokenizer_is_refused(tmp_path):
    folder = tmp_path / "st"
    folder.mkdir()
    for name in ("modules.json", "config.json", "config_sentence_transformers.json"):
        shutil.copy(minilm_path() / name, folder / name)
    with pytest.raises(TokenizerFolderError, match=rf"teachers.st.path: {folder} has no tokenizer"):
        encoders.load_teacher(encoders.TeacherSpec("st", str(folder)))


def test_export_of_a_teacher_without_tokenizer_is_one_line_and_writes_nothing(make_config, corpus_file, tmp_path,
                                                                             bert_without_tokenizer, capsys):
    config = make_config(tmp_path / "out", corpus_file, **{"teachers.tiny.path": str(bert_without_tokenizer)})
    assert export.main(config) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: teachers.tiny.path: ") and error.count("\n") == 1  # before MiniLM loads
    assert not (tmp_path / "out").exists()


def test_window_beyond_the_position_table_is_refused(tiny_bert):
    with pytest.raises(TeacherConfigError, match=r"teachers.tiny.max_seq_length=129: the model in .* reads at most "
                                                 r"128 tokens .*--config.teachers.tiny.max_seq_length=128 or less"):
        encoders.load_teacher(encoders.TeacherSpec("tiny", str(tiny_bert), "mean", max_seq_length=129))
    assert encoders.load_teacher(encoders.TeacherSpec("tiny", str(tiny_bert), "mean", max_seq_length=128))


def test_sentence_transformers_window_beyond_the_position_table_is_refused():
    with pytest.raises(TeacherConfigError, match=r"teachers.minilm.max_seq_length=600: .* reads at most 512 tokens"):
        encoders.load_teacher(encoders.TeacherSpec("minilm", "asset:all-MiniLM-L6-v2", max_seq_length=600))


def test_roberta_window_counts_its_padding_offset(tmp_path):
    """RoBERTa numbers positions from padding_idx + 1: 130 positions read 128 tokens (129 fails in torch)."""
    folder = tmp_path / "roberta"
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                               vocab_size=30522, max_position_embeddings=130)).save_pretrained(folder)
    kit.copy_tokenizer_files(minilm_path(), folder)
    with pytest.raises(TeacherConfigError, match=r"max_seq_length=129: .* reads at most 128 tokens"):
        encoders.load_teacher(encoders.TeacherSpec("roberta", str(folder), "mean", max_seq_length=129))
    teacher = encoders.load_teacher(encoders.TeacherSpec("roberta", str(folder), "mean", max_seq_length=128))
    vectors = teacher.encode_batch(["word " * 300])
    assert vectors.shape == (1, 32) and np.isfinite(vectors).all()
