"""The Student: real all-MiniLM-L6-v2 text path against sentence-transformers, the image path against the same
composition in PyTorch, bf16 against fp32, construction from a config, and every bad-input path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from gensim.test.utils import datapath
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer, BertModel, SiglipVisionConfig, SiglipVisionModel

from embed_jax.assets import minilm_path
from embed_jax.models.image_tokens import (ImagePlaceholders, add_image_placeholders, check_image_placeholders,
                                           image_prompt)
from embed_jax.models.st_pooling import pooling_from_folder
from embed_jax.models.student import Student, insert_image_tokens, validate_config

HEADS = {"teacher_dim": 48, "reduction_dims": [16, 8]}
TINY_BERT = dict(model_type="bert", vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, max_position_embeddings=64)
TINY_SIGLIP = dict(model_type="siglip_vision_model", hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=40, image_size=28, patch_size=7, vision_use_head=False)
IMAGE_TOKENS = 4

run = nnx.jit(lambda student, ids, mask: student(ids, mask, return_hidden_states=True))
run_image = nnx.jit(lambda student, ids, mask, pixels: student(ids, mask, pixel_values=pixels))


def lee_texts() -> list[str]:
    """Real ABC-news text of mixed lengths: whole documents (some past the 256-token limit) and first sentences."""
    documents = open(datapath("lee_background.cor")).read().splitlines()[:6]
    return documents[:3] + [document.split(". ")[0] + "." for document in documents[3:]] + ["Fire."]


@pytest.fixture(scope="module")
def minilm_folder():
    return minilm_path()


@pytest.fixture(scope="module")
def tokenizer(minilm_folder):
    return AutoTokenizer.from_pretrained(str(minilm_folder))


@pytest.fixture(scope="module")
def minilm_student(minilm_folder):
    return Student.from_pretrained(minilm_folder, heads=HEADS)


def tokenize(tokenizer, texts, max_length=256):
    # sentence-transformers' all-MiniLM-L6-v2 truncates at max_seq_length = 256.
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    return jnp.asarray(batch["input_ids"], jnp.int32), jnp.asarray(batch["attention_mask"], jnp.int32)


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# ---------------------------------------------------------------------------------------------------- text path


@pytest.mark.slow
def test_text_path_equals_sentence_transformers_on_real_text(minilm_folder, tokenizer, minilm_student):
    texts = lee_texts()
    reference = SentenceTransformer(str(minilm_folder), device="cpu").encode(texts, convert_to_numpy=True)
    ids, mask = tokenize(tokenizer, texts)
    outputs = run(minilm_student, ids, mask)
    assert outputs["pooled"].shape == (len(texts), 384) and outputs["pooled"].dtype == jnp.float32
    assert cosines(outputs["pooled"], reference).min() >= 0.99999
    assert outputs["last_hidden_state"].shape == (len(texts), ids.shape[1], 384)
    for dim in (48, 16, 8):
        vectors = np.asarray(outputs["embeddings"][dim])
        assert vectors.shape == (len(texts), dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_sentence_transformers_folder_pooling_is_read(minilm_folder, minilm_student):
    assert pooling_from_folder(minilm_folder) == "mean"
    assert minilm_student.config["pooling"] == "mean"


@pytest.mark.slow
def test_bf16_compute_within_stated_tolerance_of_fp32(minilm_folder, tokenizer, minilm_student):
    bf16 = Student.from_pretrained(minilm_folder, heads=HEADS, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert bf16.text_encoder.embeddings.word_embeddings.embedding[...].dtype == jnp.float32  # fp32 params
    ids, mask = tokenize(tokenizer, lee_texts())
    fp32_out, bf16_out = run(minilm_student, ids, mask), run(bf16, ids, mask)
    assert bf16_out["last_hidden_state"].dtype == jnp.bfloat16 and bf16_out["pooled"].dtype == jnp.float32
    # Stated tolerance, bf16 compute vs fp32: cosine ≥ 0.9999 for the pooled vector and ≥ 0.999 for every head.
    # Measured on 128 Lee documents and first sentences: pooled ≥ 0.99993, heads ≥ 0.99976 (the 8-d head is the
    # least precise: bf16 keeps 8 mantissa bits and a short vector averages fewer roundings).
    assert cosines(bf16_out["pooled"], fp32_out["pooled"]).min() >= 0.9999
    # Same heads (same seed), so each head's vectors are comparable too.
    for dim in (48, 16, 8):
        assert cosines(bf16_out["embeddings"][dim], fp32_out["embeddings"][dim]).min() >= 0.999


# ---------------------------------------------------------------------------------------------------- image path


@pytest.fixture(scope="module")
def tiny_siglip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("siglip")
    torch.manual_seed(0)
    config = {key: value for key, value in TINY_SIGLIP.items() if key != "model_type"}
    model = SiglipVisionModel(SiglipVisionConfig(**config)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    model.save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def image_setup(minilm_folder, tiny_siglip_folder):
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_folder))
    placeholders = add_image_placeholders(tokenizer)
    student = Student.from_pretrained(
        minilm_folder,
        heads=HEADS,
        vision={"folder": tiny_siglip_folder[0], "pool": {"num_tokens": IMAGE_TOKENS},
                "placeholders": vars(placeholders)},
        rngs=nnx.Rngs(1),
    )
    return tokenizer, placeholders, student


def image_batch(tokenizer):
    texts = [image_prompt(IMAGE_TOKENS), "a photo of " + image_prompt(IMAGE_TOKENS) + " taken at night, in colour"]
    ids, mask = tokenize(tokenizer, texts)
    pixels = np.random.default_rng(0).standard_normal((2, 3, 28, 28)).astype(np.float32)
    return ids, mask, pixels


@pytest.mark.slow
def test_added_placeholders_are_special_tokens_past_the_vocabulary(image_setup):
    tokenizer, placeholders, student = image_setup
    assert min(vars(placeholders).values()) >= 30522  # MiniLM's vocabulary: the student adds rows for them
    assert student.added_embeddings.embedding.shape == (3, 384)
    ids, _, _ = image_batch(tokenizer)
    assert int(jnp.sum(ids[0] == placeholders.token_id)) == IMAGE_TOKENS
    # A second call adds nothing and returns the same ids.
    assert add_image_placeholders(tokenizer) == placeholders


@pytest.mark.slow
def test_image_path_equals_the_same_composition_in_pytorch(minilm_folder, tiny_siglip_folder, image_setup):
    """SiglipVisionModel → AdaptiveAvgPool2d → image tokens over the placeholders in BertModel's inputs_embeds →
    masked mean, all in PyTorch, with the student's added-token rows appended to BERT's table."""
    tokenizer, placeholders, student = image_setup
    ids, mask, pixels_nchw = image_batch(tokenizer)
    got = run_image(student, ids, mask, jnp.asarray(pixels_nchw.transpose(0, 2, 3, 1)))

    bert = BertModel.from_pretrained(str(minilm_folder), add_pooling_layer=False).eval()
    bert.resize_token_embeddings(30522 + 3)
    with torch.no_grad():
        bert.embeddings.word_embeddings.weight[30522:] = torch.from_numpy(
            np.array(student.added_embeddings.embedding[...]))
        patches = tiny_siglip_folder[1](pixel_values=torch.from_numpy(pixels_nchw)).last_hidden_state
        image_tokens = torch.nn.AdaptiveAvgPool2d((IMAGE_TOKENS, 384))(patches)
        ids_t, mask_t = torch.from_numpy(np.array(ids)).long(), torch.from_numpy(np.array(mask))
        embeds = bert.embeddings.word_embeddings(ids_t)
        embeds[ids_t == placeholders.token_id] = image_tokens.reshape(-1, 384)
        hidden = bert(inputs_embeds=embeds, attention_mask=mask_t).last_hidden_state
        weights = mask_t[..., None].float()
        reference = ((hidden * weights).sum(1) / weights.sum(1)).numpy()
    np.testing.assert_allclose(np.asarray(got["pooled"]), reference, atol=1e-4)
    assert cosines(got["pooled"], reference).min() >= 0.99999


@pytest.mark.slow
def test_the_image_changes_the_vector(image_setup):
    tokenizer, _, student = image_setup
    ids, mask, pixels = image_batch(tokenizer)
    pixels = jnp.asarray(pixels.transpose(0, 2, 3, 1))
    first = run_image(student, ids, mask, pixels)["embeddings"][48]
    second = run_image(student, ids, mask, pixels[::-1])["embeddings"][48]
    assert cosines(first, second).max() < 0.9999


def test_insert_image_tokens_places_token_k_at_placeholder_k():
    ids = jnp.array([[1, 7, 9, 9, 9, 8, 2, 0], [1, 5, 5, 7, 9, 9, 9, 8]])
    embeddings = jnp.zeros((2, 8, 2))
    image = jnp.arange(12, dtype=jnp.float32).reshape(2, 3, 2) + 1
    merged = np.asarray(insert_image_tokens(embeddings, ids, image, token_id=9))
    np.testing.assert_array_equal(merged[0, 2:5], np.asarray(image[0]))
    np.testing.assert_array_equal(merged[1, 4:7], np.asarray(image[1]))
    assert (merged[0, [0, 1, 5, 6, 7]] == 0).all() and (merged[1, :4] == 0).all()


# ---------------------------------------------------------------------------------------------------- from config


def tiny_config(**overrides):
    config = {
        "text_encoder": TINY_BERT,
        "heads": HEADS,
        "vision": {"tower": TINY_SIGLIP, "pool": {"mode": "linear", "num_tokens": IMAGE_TOKENS},
                   "placeholders": {"start_id": 99, "token_id": 100, "end_id": 101}},
        "dtype": "bfloat16",
        "param_dtype": "float32",
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def config_student():
    return Student.from_config(tiny_config(), rngs=nnx.Rngs(0))


@pytest.mark.slow
def test_from_config_runs_both_paths_with_fp32_params_and_bf16_compute(config_student):
    params = nnx.state(config_student, nnx.Param)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    ids = jnp.array([[2, 99, 100, 100, 100, 100, 101, 3, 0], [2, 5, 99, 100, 100, 100, 100, 101, 3]])
    mask = (ids != 0).astype(jnp.int32)
    pixels = jnp.asarray(np.random.default_rng(0).standard_normal((2, 28, 28, 3)), jnp.float32)
    image = run_image(config_student, ids, mask, pixels)
    text = run(config_student, ids[:, :2], mask[:, :2])
    assert text["last_hidden_state"].dtype == jnp.bfloat16
    for outputs in (image, text):
        for dim in (48, 16, 8):
            vectors = np.asarray(outputs["embeddings"][dim])
            assert vectors.dtype == np.float32 and np.isfinite(vectors).all()
            np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), 1.0, atol=1e-5)


def test_every_parameter_carries_logical_axes(config_student):
    for path, variable in nnx.to_flat_state(nnx.state(config_student, nnx.Param)):
        names = variable.get_metadata().get("out_sharding")
        assert names is not None and len(names) == variable.get_value().ndim, path
        assert variable.get_metadata()["eager_sharding"] is False, path


def test_config_rebuilds_the_same_architecture(config_student):
    rebuilt = nnx.eval_shape(lambda: Student.from_config(config_student.config, rngs=nnx.Rngs(0)))
    shapes = lambda m: jax.tree.map(lambda x: (x.shape, x.dtype), nnx.state(m, nnx.Param))
    assert shapes(rebuilt) == shapes(config_student)


@pytest.mark.parametrize(
    "text_encoder",
    [
        dict(model_type="gpt2", vocab_size=101, n_embd=32, n_layer=2, n_head=4, n_positions=32),
        dict(model_type="qwen2", vocab_size=103, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=1, intermediate_size=48, max_position_embeddings=32, rope_theta=1e6),
    ],
)
def test_every_text_family_fits_the_image_path(text_encoder):
    """Shapes through the whole image path (abstractly: no weights, no compute) for GPT-2 and Qwen2 encoders."""
    config = tiny_config(text_encoder=text_encoder, text_options={"causal": False})
    student = nnx.eval_shape(lambda: Student.from_config(config, rngs=nnx.Rngs(0)))
    ids = jax.ShapeDtypeStruct((2, 10), jnp.int32)
    pixels = jax.ShapeDtypeStruct((2, 28, 28, 3), jnp.float32)
    out = nnx.eval_shape(lambda s, i, p: s(i, jnp.ones(i.shape, jnp.int32), pixel_values=p), student, ids, pixels)
    assert {dim: v.shape for dim, v in out["embeddings"].items()} == {48: (2, 48), 16: (2, 16), 8: (2, 8)}


# ---------------------------------------------------------------------------------------------------- bad input


def test_wrong_placeholder_count_is_a_clear_error_eagerly(config_student):
    ids = jnp.array([[2, 99, 100, 100, 100, 101, 3], [2, 99, 100, 100, 100, 100, 101]])
    with pytest.raises(ValueError, match=r"row 0: 3 × <img_token>, the projection pool gives 4"):
        config_student(ids, pixel_values=jnp.zeros((2, 28, 28, 3)))


@pytest.mark.slow
def test_wrong_placeholder_count_under_jit_poisons_only_that_row(config_student):
    ids = jnp.array([[2, 99, 100, 100, 100, 101, 3, 0], [2, 99, 100, 100, 100, 100, 101, 3]])
    out = run_image(config_student, ids, (ids != 0).astype(jnp.int32), jnp.zeros((2, 28, 28, 3)))
    vectors = np.asarray(out["embeddings"][48])
    assert np.isnan(vectors[0]).all() and np.isfinite(vectors[1]).all()


def test_placeholders_out_of_order_are_named():
    placeholders = ImagePlaceholders(start_id=7, token_id=9, end_id=8)
    with pytest.raises(ValueError, match="row 1: not one contiguous"):
        check_image_placeholders(np.array([[7, 9, 9, 8], [9, 7, 9, 8]]), num_tokens=2, placeholders=placeholders)


def test_image_batch_size_must_match_rows(config_student):
    ids = jnp.array([[2, 99, 100, 100, 100, 100, 101]])
    with pytest.raises(ValueError, match="2 images for 1 token rows"):
        config_student(ids, pixel_values=jnp.zeros((2, 28, 28, 3)))


def test_images_of_the_wrong_size_reach_the_tower_error(config_student):
    ids = jnp.array([[2, 99, 100, 100, 100, 100, 101]])
    with pytest.raises(ValueError, match="resize images to 28×28"):
        config_student(ids, pixel_values=jnp.zeros((1, 32, 32, 3)))


def test_pixels_for_a_text_only_student_are_refused():
    student = nnx.eval_shape(lambda: Student.from_config(tiny_config(vision=None), rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="no vision tower"):
        student(jnp.ones((1, 4), jnp.int32), pixel_values=jnp.zeros((1, 28, 28, 3)))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(head={}), r"unknown key\(s\) \['head'\]"),
        (dict(heads={"reduction_dims": [8]}), r"heads lacks \['teacher_dim'\]"),
        (dict(pooling="max"), "pooling='max'"),
        (dict(dtype="half-precision"), "dtype='half-precision'"),
        (dict(text_encoder={"hidden_size": 8}), "model_type"),
        (dict(text_encoder={**TINY_BERT, "model_type": "t5"}), "t5.*supported model_type values"),
        (dict(vision={"tower": TINY_SIGLIP, "pool": {"num_tokens": 4}}), r"vision lacks \['placeholders'\]"),
        (dict(vision={"tower": TINY_SIGLIP, "pool": {"num_tokens": 4, "mode": "max"},
                      "placeholders": {"start_id": 99, "token_id": 100, "end_id": 101}}), "adaptive_average.*linear"),
        (dict(vision={"tower": TINY_SIGLIP, "pool": {"num_tokens": 4},
                      "placeholders": {"start_id": 99, "token_id": 99, "end_id": 101}}), "three distinct token ids"),
    ],
)
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        nnx.eval_shape(lambda: Student.from_config(tiny_config(**overrides), rngs=nnx.Rngs(0)))


def test_validate_config_fills_defaults_without_touching_the_input():
    config = tiny_config(vision=None)
    validated = validate_config(config)
    assert validated["pooling"] == "mean" and validated["heads"]["reduction_dims"] == [16, 8]
    assert "pooling" not in config and "text_options" not in config


def test_ml_collections_config_is_accepted():
    import ml_collections

    validated = validate_config(ml_collections.ConfigDict(tiny_config()))
    assert validated["vision"]["pool"] == {"mode": "linear", "num_tokens": IMAGE_TOKENS}
    assert validated["heads"]["reduction_dims"] == [16, 8]


def test_vision_folder_and_tower_together_are_refused(minilm_folder, tiny_siglip_folder):
    vision = {"folder": tiny_siglip_folder[0], "tower": TINY_SIGLIP, "pool": {"num_tokens": 4},
              "placeholders": {"start_id": 1, "token_id": 2, "end_id": 3}}
    with pytest.raises(ValueError, match="either 'folder'.*or 'tower'"):
        Student.from_pretrained(minilm_folder, heads=HEADS, vision=vision)


def test_ambiguous_sentence_transformers_pooling_is_named(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(
        '[{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]')
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_max_tokens": true}')
    with pytest.raises(ValueError, match=r"1_Pooling/config.json asks for pooling \['pooling_mode_max_tokens'\]"):
        pooling_from_folder(tmp_path)


@pytest.mark.slow
def test_num_layers_keeps_the_first_layers_of_the_real_minilm():
    """A smaller student cut from a pretrained one (docs/RESULTS.md's size/quality trade): the first 3 layers of
    all-MiniLM-L6-v2 equal a 3-layer BERT given those layers' weights; its config rebuilds it."""
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from embed_jax.models.student import Student
    from embed_jax.assets import minilm_path

    heads = {"teacher_dim": 8, "reduction_dims": []}
    small = Student.from_pretrained(minilm_path(), heads=heads, text_options={"num_layers": 3})
    full = Student.from_pretrained(minilm_path(), heads=heads)
    assert small.config["text_encoder"]["num_hidden_layers"] == 3 and small.config["text_options"] == {}
    assert len(small.text_encoder.encoder.layer) == 3
    ids = jnp.asarray([[101, 7592, 2088, 102, 0]], jnp.int32)
    mask = jnp.asarray([[1, 1, 1, 1, 0]], jnp.int32)
    # The full model's hidden state after its third layer is the small model's output.
    full.text_encoder.encoder.layer = nnx.List(list(full.text_encoder.encoder.layer)[:3])
    np.testing.assert_allclose(np.asarray(small.text_encoder(ids, mask)), np.asarray(full.text_encoder(ids, mask)),
                               atol=1e-6)
    rebuilt = Student.from_config(small.config, rngs=nnx.Rngs(1))
    assert len(rebuilt.text_encoder.encoder.layer) == 3
    with pytest.raises(ValueError, match=r"option num_layers=7: .* has 6 layers; choose 1 to 6"):
        Student.from_pretrained(minilm_path(), heads=heads, text_options={"num_layers": 7})
