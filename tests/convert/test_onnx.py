"""The ONNX graph holds the whole embedding: onnxruntime gives the vectors `SentenceTransformer(folder).encode` gives,
every head of a student on the real all-MiniLM-L6-v2 base and every family, on real sentences; bad flags get one
line naming the flag and the fix."""
import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from sentence_transformers import SentenceTransformer
from sentence_transformers import models as st_models

import kit
from embed_jax.convert import onnx_graph, st_export
from embed_jax.data.corpora import wordnet_holdout
from embed_jax.models.student import Student
from embed_jax.assets import minilm_path

# Slow lane only (docs/testing.md, "Fast lane"): compiles, exports or trains whole models.
pytestmark = pytest.mark.slow

MIN_COSINE = 0.99999
HEADS = {"teacher_dim": 64, "reduction_dims": [32]}


def sentences() -> list[str]:
    return ["dog"] + [synset.definition for synset in wordnet_holdout()[500:515]]


def onnx_vectors(folder, texts, file=onnx_graph.MODEL_FILE) -> dict[str, np.ndarray]:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    return onnx_graph.run_session(onnx_graph.session(folder / file), tokenizer, texts, 256)


def min_cosine(a, b) -> float:
    return float(onnx_graph.cosines(a, b).min())


@pytest.fixture(scope="module")
def minilm_student_folder(tmp_path_factory, minilm_tokenizer_files):
    """A student on the real all-MiniLM-L6-v2 (moved off its weights) with two heads, exported by the exporter."""
    root = tmp_path_factory.mktemp("minilm_onnx")
    student = kit.perturb(Student.from_pretrained(minilm_path(), heads=HEADS, rngs=nnx.Rngs(0)), seed=2)
    kit.write_stage(root / "train", "stage3", student, init_from=str(minilm_path()), records_fingerprint="none")
    st_export.export(root / "train", root / "export", skip_records=True, tokenizer=str(minilm_tokenizer_files))
    return root / "export"


@pytest.fixture(scope="module")
def minilm_onnx(minilm_student_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "minilm"
    return onnx_graph.export_onnx(minilm_student_folder, out, all_heads=True, quantize="int8")


def test_every_head_matches_sentence_transformers(minilm_student_folder, minilm_onnx):
    texts = sentences()
    actual = onnx_vectors(minilm_onnx.folder, texts)
    assert set(actual) == {"sentence_embedding", "sentence_embedding_64", "sentence_embedding_32"}
    model = SentenceTransformer(str(minilm_student_folder), device="cpu")
    np.testing.assert_allclose(min_cosine(actual["sentence_embedding"], model.encode(texts)), 1.0, atol=1e-5)
    for dim in HEADS["reduction_dims"] + [HEADS["teacher_dim"]]:
        model[2] = st_models.Dense.load(str(minilm_student_folder / f"2_Dense_{dim}"))
        expected = model.encode(texts, convert_to_numpy=True)
        assert actual[f"sentence_embedding_{dim}"].shape == (len(texts), dim)
        assert min_cosine(actual[f"sentence_embedding_{dim}"], expected) >= MIN_COSINE


def test_int8_graph_is_written_with_its_measured_cost(minilm_onnx, minilm_student_folder):
    record = json.loads((minilm_onnx.folder / onnx_graph.RECORD_FILE).read_text())
    assert record["quantized"] == onnx_graph.INT8_FILE and (minilm_onnx.folder / onnx_graph.INT8_FILE).is_file()
    int8 = onnx_vectors(minilm_onnx.folder, sentences(), onnx_graph.INT8_FILE)
    assert 0.5 < min_cosine(int8["sentence_embedding_64"], onnx_vectors(minilm_onnx.folder, sentences())[
        "sentence_embedding_64"]) < 1.0
    assert set(record["int8_min_cosine_to_fp32"]) == set(record["outputs"])
    # The source folder relative to the graph's (evaluation's hold-out check follows it), never this machine's path.
    assert not Path(record["source"]).is_absolute()
    assert (minilm_onnx.folder / record["source"]).resolve() == minilm_student_folder.resolve()


def test_the_plain_teacher_folder_exports_its_pooled_vector(tmp_path):
    result = onnx_graph.export_onnx(minilm_path(), tmp_path / "teacher", head=None)
    texts = sentences()
    expected = SentenceTransformer(str(minilm_path()), device="cpu").encode(texts)
    assert result.outputs == {"sentence_embedding": 384}
    assert min_cosine(onnx_vectors(result.folder, texts)["sentence_embedding"], expected) >= MIN_COSINE


def family_folder(root, family):
    common = dict(hidden_size=32, num_attention_heads=4, intermediate_size=48, num_hidden_layers=2,
                  max_position_embeddings=130, vocab_size=30522)
    model_class, config = {
        "gpt2": (transformers.GPT2Model, transformers.GPT2Config(vocab_size=30522, n_layer=2, n_embd=32, n_head=4,
                                                                 n_positions=130)),
        "qwen2": (transformers.Qwen2Model, transformers.Qwen2Config(num_key_value_heads=2, **common)),
        "xlm-roberta": (transformers.XLMRobertaModel, transformers.XLMRobertaConfig(**common)),
        "mpnet": (transformers.MPNetModel, transformers.MPNetConfig(**common)),
    }[family]
    torch.manual_seed(0)
    model_class(config).eval().save_pretrained(root / "init")
    decoder = family in ("gpt2", "qwen2")
    transformers.AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(root / "init")
    if decoder:  # GPT-2 adds wte(token_type_ids) when given them; a decoder's own tokenizer gives none
        config_path = root / "init" / "tokenizer_config.json"
        config_path.write_text(json.dumps({**json.loads(config_path.read_text()),
                                           "model_input_names": ["input_ids", "attention_mask"]}))
    pooling = "lasttoken" if decoder else "mean"
    SentenceTransformer(modules=[st_models.Transformer(str(root / "init")), st_models.Pooling(32, pooling),
                                 st_models.Normalize()]).save(str(root / "st"))
    return root / "st"


@pytest.mark.parametrize("family", ["xlm-roberta", "mpnet", "gpt2", "qwen2"])
def test_every_family_traces_to_the_folder_vectors(tmp_path, family):
    folder = family_folder(tmp_path, family)
    result = onnx_graph.export_onnx(folder, tmp_path / "onnx")
    texts = sentences()
    expected = SentenceTransformer(str(folder), device="cpu").encode(texts)
    assert min_cosine(onnx_vectors(result.folder, texts)["sentence_embedding"], expected) >= MIN_COSINE


# ---------------------------------------------------------------------------------------------------- bad input


def test_an_unknown_family_is_refused(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "modules.json").write_text("[]")
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(onnx_graph.OnnxExportError, match=r"--model=.*model_type 't5' has no ONNX export; supported"):
        onnx_graph.export_onnx(tmp_path / "model", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_existing_output_folder_is_refused_unless_overwrite(minilm_onnx, minilm_student_folder):
    with pytest.raises(onnx_graph.OnnxExportError, match="exists and is not empty; pass --overwrite"):
        onnx_graph.export_onnx(minilm_student_folder, minilm_onnx.folder)
    (minilm_onnx.folder / "notes.txt").write_text("mine")
    with pytest.raises(onnx_graph.OnnxExportError, match="notes.txt, which the earlier ONNX export did not write"):
        onnx_graph.export_onnx(minilm_student_folder, minilm_onnx.folder, overwrite=True)
    (minilm_onnx.folder / "notes.txt").unlink()


def test_overwrite_replaces_an_earlier_onnx_export(minilm_student_folder, tmp_path):
    onnx_graph.export_onnx(minilm_student_folder, tmp_path / "out", head=32)
    result = onnx_graph.export_onnx(minilm_student_folder, tmp_path / "out", head=64, overwrite=True)
    assert result.outputs == {"sentence_embedding": 64}


def test_overwrite_never_replaces_a_folder_it_did_not_write(minilm_student_folder, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "data.csv").write_text("a,b\n")
    with pytest.raises(onnx_graph.OnnxExportError, match="no onnx_export.json, so no ONNX export wrote it"):
        onnx_graph.export_onnx(minilm_student_folder, tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "data.csv").read_text() == "a,b\n"


def test_a_head_the_student_lacks_is_refused(minilm_student_folder, tmp_path):
    with pytest.raises(onnx_graph.OnnxExportError, match=r"--head=99: .* has heads 64, 32; pass one of them"):
        onnx_graph.export_onnx(minilm_student_folder, tmp_path / "out", head=99)


def test_the_command_prints_one_line_naming_the_flag(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "embed_jax.convert.onnx", f"--model={tmp_path}",
                                f"--out={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1].startswith(f"error: --model={tmp_path}: no modules.json")
