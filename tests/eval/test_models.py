"""Each kind of model spec, encoded for real and checked against an independent computation of its vectors."""
import json

import numpy as np
import pytest
import torch

from embed_jax.data.pipeline import load_tokenizer
from embed_jax.eval import encoding, lee
from embed_jax.eval.__main__ import main
from embed_jax.eval.specs import ModelLoader

TEXTS = ["A dog runs across the park.", "Stocks fell sharply on Monday after the announcement.",
         "the act of reading", "Bush said the talks would continue next week in Geneva, officials reported."]


def torch_mean_pooled(folder, texts, max_length=128):
    """Masked mean of the last hidden states, straight from transformers (no embed_jax, no sentence-transformers)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    inputs = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


def unit(vectors):
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_stella_folder_scores_every_head_and_the_pooled_vector(tiny_st):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    model = ModelLoader(encoding.EncodeContext()).load(str(tiny_st))
    assert model.heads == {"16": 16, "8": 8, "pooled": 32} and model.default_head == "16"
    vectors = encoding.encode(model, TEXTS, encoding.EncodeContext())
    pooled = torch_mean_pooled(tiny_st, TEXTS)
    assert np.allclose(vectors["pooled"], unit(pooled), atol=1e-5)
    for dim in (16, 8):
        head = Dense.load(str(tiny_st / f"2_Dense_{dim}"))
        with torch.no_grad():
            expected = head({"sentence_embedding": torch.from_numpy(pooled)})["sentence_embedding"].numpy()
        assert np.allclose(vectors[str(dim)], unit(expected), atol=1e-5)
    # The default head is what sentence-transformers itself gives for the folder.
    reference = SentenceTransformer(str(tiny_st), device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert np.allclose(vectors["16"], reference, atol=1e-5)


@pytest.mark.slow
def test_trained_workdir_is_encoded_by_the_flax_student_with_every_head(tiny_workdir, tiny_bert):
    model = ModelLoader(encoding.EncodeContext()).load(str(tiny_workdir))
    assert model.kind == "flax-student" and model.stage_dir.name == "stage1"
    assert model.heads == {"32": 32, "8": 8, "pooled": 32} and model.default_head == "32"
    assert model.max_length == 128  # the init folder has no sentence_bert_config.json: its position table
    vectors = encoding.encode(model, TEXTS, encoding.EncodeContext())
    # Stage 1 trains only the heads: the pooled vector is still the init encoder's masked mean.
    assert np.allclose(vectors["pooled"], unit(torch_mean_pooled(tiny_bert, TEXTS)), atol=1e-4)
    # The heads equal the student's forward on all texts in one batch, in order, padded to the longest (no length
    # sorting, no buckets, no filler rows).
    tokenizer, pad_id = load_tokenizer(str(model.tokenizer_folder), model.max_length)
    encodings = [tokenizer.encode(text).ids for text in TEXTS]
    longest = max(map(len, encodings))
    input_ids = np.array([ids + [pad_id] * (longest - len(ids)) for ids in encodings], dtype=np.int32)
    attention_mask = np.array([[1] * len(ids) + [0] * (longest - len(ids)) for ids in encodings], dtype=np.int32)
    embeddings, _ = model.forward()(input_ids, attention_mask)
    for dim in (32, 8):
        assert np.allclose(vectors[str(dim)], np.asarray(embeddings[dim]), atol=1e-5)


def test_concat_is_the_export_target_of_its_parts(tiny_st):
    context = encoding.EncodeContext()
    loader = ModelLoader(context)
    model = loader.load(f"concat:{tiny_st}+asset:all-MiniLM-L6-v2")
    assert model.heads == {"concat": 16 + 384}
    parts = [encoding.encode(loader.load(spec), TEXTS, context)[head]
             for spec, head in ((str(tiny_st), "16"), ("asset:all-MiniLM-L6-v2", "default"))]
    expected = unit(np.concatenate([unit(part) for part in parts], axis=1))
    assert np.allclose(encoding.encode(model, TEXTS, context)["concat"], expected, atol=1e-6)


def test_weighted_concat_cosine_is_the_weighted_mean_of_its_parts_cosines(tiny_st):
    """concat:A+B@W,W is data.teacher_weights' target: its cosine between two texts is Σ w_i cos_i (weights
    normalised by their sum)."""
    context = encoding.EncodeContext()
    loader = ModelLoader(context)
    model = loader.load(f"concat:{tiny_st}+asset:all-MiniLM-L6-v2@1,3")
    assert model.weights == (0.25, 0.75) and model.source["weights"] == [0.25, 0.75]
    parts = [unit(encoding.encode(loader.load(spec), TEXTS, context)[head])
             for spec, head in ((str(tiny_st), "16"), ("asset:all-MiniLM-L6-v2", "default"))]
    vectors = encoding.encode(model, TEXTS, context)["concat"]
    expected = 0.25 * parts[0] @ parts[0].T + 0.75 * parts[1] @ parts[1].T
    np.testing.assert_allclose(vectors @ vectors.T, expected, atol=1e-5)
    equal = loader.load(f"concat:{tiny_st}+asset:all-MiniLM-L6-v2@2,2")
    unweighted = loader.load(f"concat:{tiny_st}+asset:all-MiniLM-L6-v2")
    assert np.array_equal(encoding.encode(equal, TEXTS, context)["concat"],
                          encoding.encode(unweighted, TEXTS, context)["concat"])


@pytest.mark.slow
def test_pca_projects_on_the_leading_directions_of_training_text_vectors(tiny_st):
    from embed_jax.data import corpora

    context = encoding.EncodeContext(pca_fit_texts=64)
    loader = ModelLoader(context)
    model = loader.load(f"pca:{tiny_st}@4")
    assert model.heads == {"pca4": 4} and model.source["fit_texts"] == 64
    vectors = encoding.encode(model, TEXTS, context)["pca4"]
    fit_texts = [item.text for item in corpora.builtin_texts("all", 64)]
    fit = unit(encoding.encode(loader.load(str(tiny_st)), fit_texts, context)["16"])
    mean = fit.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov((fit - mean).T))
    top = eigenvectors[:, np.argsort(eigenvalues)[::-1][:4]]
    base = unit(encoding.encode(loader.load(str(tiny_st)), TEXTS, context)["16"])
    expected = unit((base - mean) @ top)
    # Principal directions are defined up to sign: compare per column.
    signs = np.sign(np.sum(vectors * expected, axis=0))
    assert np.allclose(vectors * signs, expected, atol=1e-5)
    assert 0 < model.source["explained_variance"] < 1


def test_pca_dimension_must_be_below_the_base_models(tiny_st):
    with pytest.raises(encoding.ModelSpecError, match="DIM=16 must be between 1 and the base model's 16"):
        ModelLoader(encoding.EncodeContext()).load(f"pca:{tiny_st}@16")


def test_second_run_reads_the_cache_and_reports_the_same(tmp_path, tiny_st):
    out = tmp_path / "out"
    arguments = [f"--model={tiny_st}", f"--out={out}", "--tasks=lee_similarity"]
    assert main(arguments) == 0
    first = json.loads((out / "results.json").read_text())
    assert len(list((out / "cache").glob("*.npz"))) == 1
    assert main(arguments) == 0
    second = json.loads((out / "results.json").read_text())
    assert [row["metrics"] for row in second["rows"]] == [row["metrics"] for row in first["rows"]]
    assert all(row["timings"]["from_cache"] for row in second["rows"])
    assert not any(row["timings"]["from_cache"] for row in first["rows"])
    assert [row["head"] for row in first["rows"]] == ["16", "8", "pooled"]


def test_cache_is_not_read_after_the_model_changes(tmp_path, tiny_st):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(tiny_st, folder)
    context = encoding.EncodeContext(cache_dir=tmp_path / "cache")
    before = encoding.encode(ModelLoader(context).load(str(folder)), list(lee.lee_documents()[:3]), context)
    weights = folder / "2_Dense_8" / "model.safetensors"
    tensors = load_file(str(weights))
    save_file({name: -tensor for name, tensor in tensors.items()}, str(weights))  # head 8 now gives -v
    after = encoding.encode(ModelLoader(context).load(str(folder)), list(lee.lee_documents()[:3]), context)
    assert np.allclose(after["8"], -before["8"], atol=1e-6)


@pytest.mark.slow
def test_a_resumed_run_that_trains_nothing_keeps_the_students_cache_key(tmp_path, tiny_workdir):
    """Resuming rewrites student_config.json (same text), loss curves and TensorBoard events; a new checkpoint file
    is what changes the vectors."""
    import shutil

    workdir = tmp_path / "train"
    shutil.copytree(tiny_workdir, workdir)
    stage = workdir / "stage1"

    def key():
        return ModelLoader(encoding.EncodeContext()).load(str(workdir)).fingerprint()

    before = key()
    config = stage / "student_config.json"
    config.write_text(config.read_text())
    (stage / "loss_curves.png").write_bytes(b"redrawn")
    (stage / "tensorboard").mkdir(exist_ok=True)
    (stage / "tensorboard" / "events.out.tfevents.1").write_bytes(b"more events")
    assert key() == before
    step = max((stage / "checkpoints").iterdir(), key=lambda path: path.name)
    (step / "extra_file").write_bytes(b"a retrained checkpoint")
    assert key() != before
