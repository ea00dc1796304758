"""Every text family the importer knows exports through its own name table: tiny random XLM-RoBERTa, MPNet, GPT-2
and Qwen2 (scanned layers) students load in transformers' AutoModel with the Flax hidden states, and read back
bit-exact; a GPT-2 student whose tokenizer has no pad token loads and encodes in sentence-transformers."""
import json

import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from sentence_transformers import SentenceTransformer

import kit
from embed_jax.convert import hf_export, st_export
from embed_jax.data.corpora import wordnet_holdout
from embed_jax.models.student import Student

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow

TOLERANCE = 1e-4  # fp32 hidden-state parity, absolute (the bound of the model parity tests, docs/models.md "Parity")
MIN_COSINE = 0.99999
HEADS = {"teacher_dim": 24, "reduction_dims": [8]}


def tiny_models(tokenizer_vocab: int):
    common = dict(hidden_size=32, num_attention_heads=4, intermediate_size=48)
    return {
        "xlm-roberta": (transformers.XLMRobertaModel, transformers.XLMRobertaConfig(
            vocab_size=99, num_hidden_layers=2, max_position_embeddings=40, **common), {}),
        "gpt2": (transformers.GPT2Model, transformers.GPT2Config(
            vocab_size=tokenizer_vocab, n_layer=2, n_embd=32, n_head=4, n_positions=40), {}),
        "mpnet": (transformers.MPNetModel, transformers.MPNetConfig(
            vocab_size=99, num_hidden_layers=2, max_position_embeddings=40, **common), {}),
        "qwen2": (transformers.Qwen2Model, transformers.Qwen2Config(
            vocab_size=99, num_hidden_layers=2, num_key_value_heads=2, max_position_embeddings=40, **common),
            {"scan": True}),
    }


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer trained here on real WordNet text, with GPT-2's special token and no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = [synset.definition for synset in wordnet_holdout()[:400]]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    folder = tmp_path_factory.mktemp("bpe")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                                bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.save_pretrained(folder)
    assert fast.pad_token is None
    return folder, tokenizer.get_vocab_size()


@pytest.fixture(scope="module")
def family_exports(tmp_path_factory, teacher_records, fingerprint, bpe_tokenizer, minilm_tokenizer_files):
    """{family: (student, hf folder it started from, exported folder)}."""
    bpe_folder, bpe_vocab = bpe_tokenizer
    return {family: kit.export_tiny_family(
                tmp_path_factory.mktemp(family), model_class, config, text_options=options, heads=HEADS, seed=7,
                tokenizer=bpe_folder if family == "gpt2" else minilm_tokenizer_files, records_fingerprint=fingerprint,
                records_dirs=[str(teacher_records)])
            for family, (model_class, config, options) in tiny_models(bpe_vocab).items()}


@pytest.mark.parametrize("family", ["xlm-roberta", "mpnet", "gpt2", "qwen2"])
def test_automodel_gives_the_flax_hidden_states(family_exports, family):
    student, _, folder = family_exports[family]
    model = transformers.AutoModel.from_pretrained(folder).eval()
    assert type(model).__name__ == json.loads((folder / "config.json").read_text())["architectures"][0]
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 90, (3, 11), generator=generator)
    mask = torch.tensor([[1] * 11, [1] * 7 + [0] * 4, [1] * 4 + [0] * 7])
    with torch.no_grad():
        expected = model(input_ids=ids * mask, attention_mask=mask).last_hidden_state.numpy()
    actual = np.asarray(student.text_encoder((ids * mask).numpy().astype(np.int32), mask.numpy().astype(np.int32)))
    real = mask.numpy().astype(bool)
    assert np.abs(actual[real] - expected[real]).max() <= TOLERANCE


@pytest.mark.parametrize("family", ["xlm-roberta", "mpnet", "gpt2", "qwen2"])
def test_reverse_import_is_bit_exact(family_exports, family):
    student, _, folder = family_exports[family]
    original, loaded = hf_export.flat_params(student), hf_export.flat_params(hf_export.load_exported(folder))
    assert sorted(loaded) == sorted(original)
    for path, array in original.items():
        np.testing.assert_array_equal(loaded[path], array, err_msg=f"{family}: {path}")


def test_gpt2_folder_encodes_in_sentence_transformers(family_exports):
    student, _, folder = family_exports["gpt2"]
    texts = [synset.definition for synset in wordnet_holdout()[400:410]]
    model = SentenceTransformer(str(folder), device="cpu")
    vectors = model.encode(texts, convert_to_numpy=True)
    batch = model.tokenizer(texts, padding=True, truncation=True, max_length=model.max_seq_length, return_tensors="np")
    reference = np.asarray(student(batch["input_ids"].astype(np.int32),
                                   batch["attention_mask"].astype(np.int32))["embeddings"][24])
    assert np.sum(vectors * reference, axis=1).min() >= MIN_COSINE
    notices = json.loads((folder / hf_export.EXPORT_FILE).read_text())["notices"]
    assert any("no pad token" in notice for notice in notices)


def test_bidirectional_decoder_is_refused(family_exports, tmp_path, fingerprint, teacher_records):
    _, init_folder, _ = family_exports["gpt2"]
    student = Student.from_pretrained(init_folder, heads=HEADS, text_options={"causal": False}, rngs=nnx.Rngs(0))
    kit.write_stage(tmp_path / "train", "stage1", student, init_from=str(init_folder),
                    records_fingerprint=fingerprint)
    with pytest.raises(hf_export.ExportError, match="text_options.causal=False"):
        st_export.export(tmp_path / "train", tmp_path / "out", records_dirs=[str(teacher_records)])
    assert not (tmp_path / "out").exists()
