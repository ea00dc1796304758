"""A real all-MiniLM-L6-v2 student with FC1 + reduction heads → exported folder: sentence-transformers (and plain
transformers, through the model card's own code) give the Flax vectors for every head; the folder reads back into
the same parameters, bit for bit; the layout and embed_jax_export.json follow the agreed contract."""
import json
import os
import re

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense
from transformers import AutoTokenizer

import kit
from embed_jax.convert import hf_export
from embed_jax.convert.hf_export import load_exported
from embed_jax.data.corpora import lee_holdout, wordnet_holdout

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow

# The exported folder's vectors are the Flax model's (docs/export.md; observed min 0.9999998 on 128 texts).
MIN_COSINE = 0.99999


@pytest.fixture(scope="module")
def sentences():
    """Real text of mixed lengths: held-out WordNet definitions and usage examples, and two Lee news documents
    (longer than max_seq_length, so truncation is exercised too)."""
    synsets = wordnet_holdout()[:12]
    texts = [synset.definition for synset in synsets] + [example for synset in synsets for example in synset.examples]
    return texts[:20] + [document.text for document in lee_holdout()[:2]]


def flax_vectors(student, folder, texts):
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    max_length = json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    outputs = student(batch["input_ids"].astype(np.int32), batch["attention_mask"].astype(np.int32))
    return {dim: np.asarray(vectors) for dim, vectors in outputs["embeddings"].items()}


def row_cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_sentence_transformers_matches_flax_for_every_head(minilm_export, minilm_students, sentences):
    student = minilm_students[1]
    reference = flax_vectors(student, minilm_export, sentences)
    model = SentenceTransformer(str(minilm_export), device="cpu")
    assert model.encode(["a sentence"]).shape == (1, 1152)  # FC1 is the default head
    for dim in student.heads.dims:
        model[2] = Dense.load(str(minilm_export / f"2_Dense_{dim}"))
        vectors = model.encode(sentences, convert_to_numpy=True, batch_size=8)
        assert vectors.shape == (len(sentences), dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)  # Normalize is the last module
        assert row_cosines(vectors, reference[dim]).min() >= MIN_COSINE, dim


def test_model_card_code_runs_and_gives_the_flax_vectors(minilm_export, minilm_students, sentences):
    """The README's two recipes (sentence-transformers head switch, plain transformers), executed as written."""
    card = (minilm_export / "README.md").read_text()
    blocks = [block.replace("PATH/TO/THIS/FOLDER", str(minilm_export))
              for block in re.findall(r"```python\n(.*?)```", card, flags=re.S)]
    assert len(blocks) == 3
    reference = flax_vectors(minilm_students[1], minilm_export, ["a sentence"])
    namespace = {}
    for block in blocks[:2]:
        exec(block, namespace)  # noqa: S102 - the card's own example code
    switched = namespace["vectors"]
    assert row_cosines(switched, reference[switched.shape[1]]).min() >= MIN_COSINE
    namespace = {}
    exec(blocks[2], namespace)  # noqa: S102
    plain = namespace["vectors"].numpy()
    assert row_cosines(plain, reference[1152]).min() >= MIN_COSINE


def test_reverse_import_gives_back_the_same_parameters_bit_exact(minilm_export, minilm_students):
    student = minilm_students[1]
    restored = load_exported(minilm_export)
    original, loaded = hf_export.flat_params(student), hf_export.flat_params(restored)
    assert sorted(loaded) == sorted(original)
    for path, array in original.items():
        assert loaded[path].dtype == np.float32
        np.testing.assert_array_equal(loaded[path], array, err_msg=path)
    assert restored.pooling_method == student.pooling_method and restored.heads.dims == student.heads.dims


def test_folder_follows_the_export_contract(minilm_export, minilm_workdir, teacher_records, fingerprint,
                                           minilm_students):
    record = json.loads((minilm_export / hf_export.EXPORT_FILE).read_text())
    assert record["format_version"] == 1
    assert record["student_config"] == json.loads(json.dumps(minilm_students[1].config))
    assert record["heads"] == [1152, 256, 128] and record["default_head"] == 1152
    # Paths relative to the folder: a published folder holds no local path (evaluation resolves them from there)
    assert record["source"] == {"workdir": os.path.relpath(minilm_workdir, minilm_export), "stage": "stage3", "step": 5}
    assert record["training_records"] == [{"records_dir": os.path.relpath(teacher_records, minilm_export),
                                           "num_records": kit.TEACHER_RECORDS_COUNT,
                                           "corpus_fingerprint": fingerprint}]
    assert record["vision"] is None
    modules = json.loads((minilm_export / "modules.json").read_text())
    assert [module["type"].rsplit(".", 1)[1] for module in modules] == ["Transformer", "Pooling", "Dense", "Normalize"]
    assert modules[2]["path"] == "2_Dense_1152"
    settings = json.loads((minilm_export / "config_sentence_transformers.json").read_text())
    assert settings["similarity_fn_name"] == "cosine" and settings["prompts"] == {}
    config = json.loads((minilm_export / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["model_type"] == "bert"
    # Every file listed (what --overwrite may replace) exists; nothing unlisted was written.
    written = sorted(str(path.relative_to(minilm_export)) for path in minilm_export.rglob("*") if path.is_file())
    assert sorted(record["files"]) == written
    card = (minilm_export / "README.md").read_text()
    assert "2_Dense_256" in card and "minilm" in card and "stage3" in card


def test_head_folder_that_does_not_match_is_refused(minilm_export, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(minilm_export, copy)
    config_path = copy / "2_Dense_256" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()),
                                       "activation_function": "torch.nn.modules.activation.Tanh"}))
    with pytest.raises(hf_export.ExportError, match="2_Dense_256.*activation_function"):
        load_exported(copy)

