"""Teachers: length-bucketed encoding gives the vectors users get from SentenceTransformer / transformers."""
import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

from embed_jax.data import corpora
from embed_jax.teachers import encoders
from embed_jax.assets import minilm_path


@pytest.fixture(scope="module")
def texts():
    mixed = [item.text for item in corpora.builtin_texts("wordnet", 24)]
    return mixed + [item.text for item in corpora.builtin_texts("lee_background", 2)]  # long: truncated at 256


@pytest.fixture(scope="module")
def minilm_st():
    return SentenceTransformer(str(minilm_path()), device="cpu")


def bucketed(teacher, texts):
    return encoders.encode_texts(teacher, texts, max_tokens_per_batch=512, max_batch_size=16)


@pytest.mark.slow
def test_sentence_transformers_folder_matches_encode(texts, minilm_st):
    teacher = encoders.load_teacher(encoders.TeacherSpec("minilm", "asset:all-MiniLM-L6-v2"))
    assert (teacher.dim, teacher.max_seq_length) == (384, 256)
    np.testing.assert_allclose(bucketed(teacher, texts), minilm_st.encode(texts), atol=1e-6)


def test_prompt_is_what_sentence_transformers_does_with_it(texts, minilm_st):
    teacher = encoders.load_teacher(encoders.TeacherSpec("minilm", "asset:all-MiniLM-L6-v2", prompt="query: "))
    vectors = bucketed(teacher, texts[:10])
    np.testing.assert_allclose(vectors, minilm_st.encode(texts[:10], prompt="query: "), atol=1e-6)
    assert np.abs(vectors - minilm_st.encode(texts[:10])).max() > 1e-3


@pytest.mark.slow
def test_hugging_face_folder_with_mean_pooling_matches_sentence_transformers(texts, minilm_st):
    # MiniLM's own pipeline is Transformer → mean Pooling → Normalize: the HF path must give the same direction.
    teacher = encoders.load_teacher(encoders.TeacherSpec("hf", str(minilm_path()), pooling="mean",
                                                         max_seq_length=256))
    vectors = bucketed(teacher, texts)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, minilm_st.encode(texts), atol=1e-6)


def test_cls_pooling_is_the_first_token_state(texts, tiny_bert):
    teacher = encoders.load_teacher(encoders.TeacherSpec("tiny", str(tiny_bert), pooling="cls"))
    assert teacher.max_seq_length == 128  # the model's position table, below the tokenizer's 512
    tokenizer, model = AutoTokenizer.from_pretrained(tiny_bert), AutoModel.from_pretrained(tiny_bert).eval()
    with torch.no_grad():
        expected = np.concatenate([
            model(**tokenizer([text], truncation=True, max_length=128, return_tensors="pt")).last_hidden_state[:, 0]
            .numpy() for text in texts])
    np.testing.assert_allclose(bucketed(teacher, texts), expected, atol=1e-5)


def test_fingerprint_follows_the_weights(tmp_path, tiny_bert):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert, copy)
    (copy / "README.md").write_text("a model card does not change vectors")
    assert encoders.folder_fingerprint(copy) == encoders.folder_fingerprint(tiny_bert)
    config = (copy / "config.json").read_text().replace('"hidden_dropout_prob": 0.1', '"hidden_dropout_prob": 0.2')
    (copy / "config.json").write_text(config)
    assert encoders.folder_fingerprint(copy) != encoders.folder_fingerprint(tiny_bert)


def test_folder_without_a_window_asks_for_max_seq_length(tmp_path, tiny_bert):
    """T5 has relative positions (no position table); with a tokenizer that states no limit, nothing bounds it."""
    import json
    import shutil

    from transformers import T5Config, T5EncoderModel

    folder = tmp_path / "t5"
    T5EncoderModel(T5Config(vocab_size=30522, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=4)).save_pretrained(
        folder)
    for name in ("tokenizer.json", "vocab.txt"):
        shutil.copy(tiny_bert / name, folder / name)
    tokenizer_config = json.loads((tiny_bert / "tokenizer_config.json").read_text())
    tokenizer_config.pop("model_max_length")
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    with pytest.raises(encoders.TeacherConfigError, match=r"teachers.x.max_seq_length: .* states no input window"):
        encoders.load_teacher(encoders.TeacherSpec("x", str(folder), pooling="mean"))
