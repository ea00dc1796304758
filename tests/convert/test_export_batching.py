"""Every text family exports a folder that batches the way the student reads: tiny random BERT, XLM-RoBERTa, MPNet,
GPT-2 and Qwen2 students, exported from tokenizers that pad and truncate on the LEFT (GPT-2 and Qwen2 with no pad
token), give in `SentenceTransformer.encode` of one batch of very different lengths the vectors the Flax student
gives each text alone (docs/export.md)."""
import json
import shutil

import numpy as np
import pytest
import transformers
from sentence_transformers import SentenceTransformer

import kit
from embed_jax.convert import tokenizer_files
from embed_jax.data.corpora import wordnet_holdout
from embed_jax.models.student import Student

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow

MIN_COSINE = 0.99999
HEADS = {"teacher_dim": 24, "reduction_dims": [8]}
BERT_VOCAB = 30522  # all-MiniLM-L6-v2's tokenizer


def batch_texts() -> list[str]:
    """One word, then short to long WordNet definitions (up to 180 characters: ~100 tokens of the 300-token BPE,
    within the tiny models' 130 positions)."""
    definitions = sorted((synset.definition for synset in wordnet_holdout()[:300]
                          if len(synset.definition) <= 180), key=len)
    return ["dog", definitions[0], definitions[len(definitions) // 2], definitions[-1], "Yes."]


def tiny_models(bpe_vocab: int):
    common = dict(hidden_size=32, num_attention_heads=4, intermediate_size=48, num_hidden_layers=2,
                  max_position_embeddings=130)
    return {
        "bert": (transformers.BertModel, transformers.BertConfig(vocab_size=BERT_VOCAB, **common), {}),
        "xlm-roberta": (transformers.XLMRobertaModel, transformers.XLMRobertaConfig(vocab_size=BERT_VOCAB, **common),
                        {}),
        "mpnet": (transformers.MPNetModel, transformers.MPNetConfig(vocab_size=BERT_VOCAB, **common), {}),
        "gpt2": (transformers.GPT2Model, transformers.GPT2Config(
            vocab_size=bpe_vocab, n_layer=2, n_embd=32, n_head=4, n_positions=130), {}),
        "qwen2": (transformers.Qwen2Model, transformers.Qwen2Config(
            vocab_size=bpe_vocab, num_key_value_heads=2, **common), {"scan": True}),
    }


def pad_on_the_left(folder):
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.update(padding_side="left", truncation_side="left")
    config_path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def left_bpe_tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer trained here on real WordNet text: GPT-2's one special token, no pad token, left
    padding (what a decoder's generation setup often ships)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([synset.definition for synset in wordnet_holdout()[:400]],
                                  trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder = tmp_path_factory.mktemp("bpe_left")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                         bos_token="<|endoftext|>", unk_token="<|endoftext|>").save_pretrained(folder)
    return pad_on_the_left(folder), tokenizer.get_vocab_size()


@pytest.fixture(scope="module")
def left_bert_tokenizer(tmp_path_factory, minilm_tokenizer_files):
    folder = tmp_path_factory.mktemp("bert_left")
    for path in minilm_tokenizer_files.iterdir():
        shutil.copy(path, folder / path.name)
    return pad_on_the_left(folder)


@pytest.fixture(scope="module")
def family_exports(tmp_path_factory, left_bpe_tokenizer, left_bert_tokenizer):
    """{family: (student, exported folder)}, each exported by the real exporter from a left-padding tokenizer."""
    bpe_folder, bpe_vocab = left_bpe_tokenizer
    exports = {}
    for family, (model_class, config, options) in tiny_models(bpe_vocab).items():
        student, _, folder = kit.export_tiny_family(
            tmp_path_factory.mktemp(family), model_class, config, text_options=options, heads=HEADS, seed=5,
            tokenizer=bpe_folder if family in ("gpt2", "qwen2") else left_bert_tokenizer, records_fingerprint="none",
            skip_records=True)
        exports[family] = (student, folder)
    return exports


def flax_one_at_a_time(student: Student, tokenizer, texts: list[str], dim: int) -> np.ndarray:
    rows = []
    for text in texts:
        ids = np.asarray([tokenizer(text)["input_ids"]], dtype=np.int32)
        rows.append(np.asarray(student(ids, np.ones_like(ids))["embeddings"][dim])[0])
    return np.stack(rows)


@pytest.mark.parametrize("family", ["bert", "xlm-roberta", "mpnet", "gpt2", "qwen2"])
def test_a_batch_of_mixed_lengths_gives_the_flax_vectors(family_exports, family):
    student, folder = family_exports[family]
    texts = batch_texts()
    model = SentenceTransformer(str(folder), device="cpu")
    lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    assert max(lengths) >= 8 * min(lengths) and max(lengths) <= model.max_seq_length  # padded, never truncated
    reference = flax_one_at_a_time(student, model.tokenizer, texts, HEADS["teacher_dim"])
    vectors = model.encode(texts, batch_size=len(texts), convert_to_numpy=True)
    cosines = np.sum(vectors * reference, axis=1) / np.linalg.norm(vectors, axis=1)
    assert cosines.min() >= MIN_COSINE, f"{family}: per-row cosine {np.round(cosines, 6).tolist()}"


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_the_folder_says_right_padding_and_why(family_exports, family):
    _, folder = family_exports[family]
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["padding_side"] == config["truncation_side"] == "right"
    notices = json.loads((folder / "embed_jax_export.json").read_text())["notices"]
    assert any("padding_side was 'left'" in notice for notice in notices)
    assert ("no pad token" in " ".join(notices)) == (family == "gpt2")


def test_a_tokenizer_that_already_batches_right_is_copied_unchanged(minilm_tokenizer_files, tmp_path):
    assert tokenizer_files.copy_tokenizer(minilm_tokenizer_files, tmp_path) == []
    for path in minilm_tokenizer_files.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_a_tokenizer_with_nothing_to_pad_with_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"a": 0, "b": 1}, unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(tmp_path / "source")
    (tmp_path / "out").mkdir()
    with pytest.raises(tokenizer_files.TokenizerFilesError, match="no pad, end-of-text or unknown token"):
        tokenizer_files.copy_tokenizer(tmp_path / "source", tmp_path / "out")


# ---------------------------------------------------------------------------------------------------- the window


def past_the_window(tokenizer, window: int) -> list[str]:
    """Real texts longer than the window: WordNet definitions joined until each passes it by 20–60 tokens, and one
    short text in the same batch."""
    definitions = [synset.definition for synset in wordnet_holdout()[:600]]
    texts, current = [], []
    for definition in definitions:
        current.append(definition)
        if len(tokenizer(" ".join(current))["input_ids"]) > window + 20 * (len(texts) + 1):
            texts.append(" ".join(current))
            current = []
            if len(texts) == 3:
                break
    return texts + ["A short one."]


@pytest.mark.parametrize("family", ["bert", "xlm-roberta", "mpnet", "gpt2", "qwen2"])
def test_plain_tokenizer_and_onnx_graph_cut_at_the_window(family_exports, family, tmp_path):
    """An engine that knows only the tokenizer files and the graph (AutoTokenizer(..., truncation=True) + ONNX)
    gives sentence-transformers' vectors for texts past the window: both folders' tokenizer files carry it."""
    from transformers import AutoTokenizer

    from embed_jax.convert import onnx_graph

    _, folder = family_exports[family]
    model = SentenceTransformer(str(folder), device="cpu")
    window = model.max_seq_length
    onnx_folder = onnx_graph.export_onnx(folder, tmp_path / "onnx").folder
    texts = past_the_window(model.tokenizer, window)
    assert all(len(model.tokenizer(text)["input_ids"]) > window for text in texts[:-1])
    expected = model.encode(texts, batch_size=len(texts), convert_to_numpy=True)
    for tokenizer_folder in (folder, onnx_folder):
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
        assert tokenizer.model_max_length == window
        fast = json.loads((tokenizer_folder / "tokenizer.json").read_text())["truncation"]
        assert fast["max_length"] == window and fast["direction"] == "Right"
        batch = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
        assert batch["input_ids"].shape[1] == window
        vectors = onnx_graph.session(onnx_folder / onnx_graph.MODEL_FILE).run(
            [onnx_graph.OUTPUT_NAME], {name: batch[name].astype(np.int64) for name in onnx_graph.INPUT_NAMES})[0]
        np.testing.assert_array_less(1 - 1e-5, onnx_graph.cosines(vectors, expected))
