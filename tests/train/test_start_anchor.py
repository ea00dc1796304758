"""Keeping the student near its start (embed_jax/train/stages/start_anchor.py): WiSE-FT interpolation of the encoder before a
cached heads stage, and FC1 initialised from the start's own vectors; each bad value refused before any work."""
from pathlib import Path

import numpy as np
import pytest

import kit
from embed_jax.teachers import export
from embed_jax.train import config as train_config, loop, preflight
from embed_jax.train.stages import start_anchor, student as stage_student

FC1 = "heads/dense/dense_{dim}"
ENCODER = "text_encoder/encoder/layer/3/attention/self/query/kernel"


# ---------------------------------------------------------------------------------------------------- the arithmetic


def test_fc1_from_start_is_scaled_identity_on_the_block_and_least_squares_elsewhere():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)) * rng.uniform(0.5, 2.0, size=(400, 1))
    block = slice(3, 11)
    target = np.concatenate([rng.normal(size=(400, 3)), 0.4 * x / np.linalg.norm(x, axis=1, keepdims=True),
                             x @ rng.normal(size=(8, 5)) + 0.1 * rng.normal(size=(400, 5))], axis=1)
    kernel, bias = start_anchor.fc1_from_start(x, target, block)
    c = np.sum(x * target[:, block]) / np.sum(x * x)
    np.testing.assert_allclose(kernel[:, block], c * np.eye(8), atol=1e-7)
    assert c > 0 and np.all(bias[block] == 0)
    rest = np.r_[0:3, 11:16]
    design = np.concatenate([x, np.ones((400, 1))], axis=1)
    expected, *_ = np.linalg.lstsq(design, target[:, rest], rcond=None)
    np.testing.assert_allclose(kernel[:, rest], expected[:-1], atol=1e-4)
    np.testing.assert_allclose(bias[rest], expected[-1], atol=1e-4)
    with pytest.raises(ValueError, match=r"block \(5-d\) to be the pooled vector's width \(8-d\)"):
        start_anchor.fc1_from_start(x, target, slice(11, 16))


def test_interpolate_mixes_the_encoder_and_leaves_the_heads_out():
    start = {"text_encoder/a": np.zeros((2, 3), np.float32), "heads/dense/dense_4/kernel": np.zeros((3, 4))}
    trained = {"text_encoder/a": np.full((2, 3), 2.0, np.float32), "heads/dense/dense_4/kernel": np.ones((3, 4))}
    mixed = start_anchor.interpolate(start, trained, 0.25)
    assert list(mixed) == ["text_encoder/a"] and mixed["text_encoder/a"].dtype == np.float32
    np.testing.assert_array_equal(mixed["text_encoder/a"], np.full((2, 3), 0.5))


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), True, "0.5"])
def test_alpha_outside_zero_one_is_refused_naming_the_key(alpha):
    stage = train_config.StageConfig("heads", 1e-3, 10, kind="cached_pooled", start_interpolation=alpha)
    with pytest.raises(train_config.ConfigError,
                       match=r"config key stage3_heads\.start_interpolation=.*a number in \[0, 1\]"):
        stage.check("stage3_heads")


def test_the_anchor_keys_default_to_off_in_every_stage():
    stage = train_config.stage_config(kit.load_config_file("distill", None), "stage3_heads")
    assert (stage.fc1_init, stage.start_interpolation, stage.interpolation_start) == ("", 1.0, "")


def test_encoders_that_differ_are_refused_naming_the_parameter():
    start = {"text_encoder/a": np.zeros((2, 3)), "text_encoder/b": np.zeros(3)}
    with pytest.raises(ValueError, match=r"'text_encoder/a' is \(2, 3\) in the start S but \(2, 4\)"):
        start_anchor.check_same_encoder(start, {"text_encoder/a": np.zeros((2, 4)), "text_encoder/b": np.zeros(3)},
                                        start_name="S", key="k")
    with pytest.raises(ValueError, match=r"config key k: the trained student has no parameter 'text_encoder/b'"):
        start_anchor.check_same_encoder(start, {"text_encoder/a": np.zeros((2, 3))}, start_name="S", key="k")


# ---------------------------------------------------------------------------------------------------- in a run


def interpolation_config(smoke_config, alpha):
    """Stage 1 (cached), stage 2 (the last 2 layers move), then a cached heads stage on the interpolated encoder."""
    smoke_config.stage_order = ("stage1", "stage2", "stage3_heads")
    smoke_config.stage1.kind = "cached_pooled"
    for name in smoke_config.stage_order:
        smoke_config[name].num_steps = 2
    smoke_config.stage2.learning_rate = 1e-2  # the encoder must move for the interpolation to show
    smoke_config.stage3_heads.start_interpolation = alpha
    return smoke_config


@pytest.mark.slow
def test_cached_heads_stage_interpolates_the_encoder_with_the_start(new_smoke_config, tmp_path):
    alpha = 0.5  # the general case: neither end (0 is the start itself, 1 skips the interpolation)
    config = interpolation_config(new_smoke_config(), alpha)
    preflight.check_config(config)
    _, second, third = loop.train_and_evaluate(config, tmp_path)
    start = stage_student.load_init_params(config)[ENCODER]
    trained = stage_student.load_stage_params(second)[ENCODER]
    assert np.abs(trained - start).max() > 1e-3
    np.testing.assert_allclose(stage_student.load_stage_params(third)[ENCODER],
                               (1 - alpha) * start + alpha * trained, atol=1e-6)


def test_another_start_of_other_shapes_is_refused_before_any_work(new_smoke_config, tmp_path):
    config = interpolation_config(new_smoke_config(), 0.5)
    config.stage3_heads.interpolation_start = str(kit.save_tiny_bert(tmp_path / "two_layers", num_layers=2,
                                                                     max_positions=64, pooler=False))
    with pytest.raises(preflight.ConfigError, match=r"config key stage3_heads\.interpolation_start: the start has no "
                                                    r"parameter 'text_encoder/encoder/layer/2/"):
        preflight.check_config(config)
    assert not (tmp_path / "stage1").exists()


def test_anchor_keys_only_on_a_cached_heads_stage(smoke_config):
    smoke_config.stage2.start_interpolation = 0.5
    with pytest.raises(preflight.ConfigError,
                       match=r"stage2\.start_interpolation needs stage2\.kind='cached_pooled'"):
        preflight.check_config(smoke_config)
    smoke_config.stage2.start_interpolation = 1.0
    smoke_config.stage2.fc1_init = "start"
    with pytest.raises(preflight.ConfigError, match=r"stage2\.fc1_init needs stage2\.kind='cached_pooled'"):
        preflight.check_config(smoke_config)
    smoke_config.stage2.fc1_init = ""
    smoke_config.stage1.fc1_init = "pca"
    with pytest.raises(preflight.ConfigError, match=r"stage1\.fc1_init='pca': use '' .* or 'start'"):
        preflight.check_config(smoke_config)


@pytest.fixture(scope="module")
def two_teacher_records(tmp_path_factory, tiny_bert) -> Path:
    """MiniLM + the tiny BERT (mean pooling, 32-d) on 64 WordNet definitions: the tiny BERT is a teacher and a start."""
    config = kit.minilm_and_tiny_export_config(tmp_path_factory.mktemp("anchor") / "records", tiny_bert)
    export.run_export(config)
    return Path(config.output_dir)


def fc1_start_config(new_smoke_config, records, tiny_bert, *, mesh=(-1, 1)):
    config = new_smoke_config()
    config.model.init_from = str(tiny_bert)
    config.model.teacher_dim = 384 + 32
    config.data.records_dir = str(records)
    config.stage_order = ("stage1",)
    config.stage1.kind = "cached_pooled"
    config.stage1.fc1_init = "start"
    config.stage1.num_steps, config.stage1.learning_rate = 1, 1e-9  # the init, all but unmoved by one step
    config.mesh.data, config.mesh.tensor = mesh
    return config


@pytest.mark.slow
def test_fc1_starts_at_the_start_on_any_mesh(new_smoke_config, two_teacher_records, tiny_bert, tmp_path):
    fc1 = FC1.format(dim=416)
    runs = []
    for mesh in ((-1, 1), (2, 4)):  # batches over the 8 simulated devices; FC1 split over 4, batches over 2
        config = fc1_start_config(new_smoke_config, two_teacher_records, tiny_bert, mesh=mesh)
        preflight.check_config(config)
        [result] = loop.train_and_evaluate(config, tmp_path / f"data{mesh[0]}_tensor{mesh[1]}")
        runs.append(stage_student.load_stage_params(result))
    kernel = runs[0][f"{fc1}/kernel"]
    tiny_block = slice(384, 416)  # teacher_order minilm,tiny
    scale = kernel[0, 384]
    assert scale > 0
    np.testing.assert_allclose(kernel[:, tiny_block], scale * np.eye(32), atol=1e-6)
    assert np.abs(kernel[:, :384]).max() > 1e-3  # least squares onto MiniLM's block, not zeros
    # The same rows on both meshes: the identity block alike, the least-squares block within what the split encoder's
    # rounding (~1e-7 in a pooled vector) becomes in a fit of 33 unknowns on 64 rows (measured: 1.5e-4). Rows paired
    # with another text's target would move it by its own size (~0.05).
    np.testing.assert_allclose(runs[1][f"{fc1}/kernel"][:, tiny_block], kernel[:, tiny_block], atol=1e-6)
    for name in (f"{fc1}/kernel", f"{fc1}/bias"):
        np.testing.assert_allclose(runs[1][name], runs[0][name], atol=1e-3)


@pytest.mark.slow  # its records fixture exports with two teachers
def test_fc1_from_a_start_no_teacher_is_refused_before_any_work(new_smoke_config, two_teacher_records, tiny_student,
                                                                tmp_path):
    config = fc1_start_config(new_smoke_config, two_teacher_records, tiny_student)
    with pytest.raises(preflight.ConfigError, match=r"stage1\.fc1_init='start' .* no teacher of the records .*minilm: "
                                                    r"asset:all-MiniLM-L6-v2"):
        preflight.check_config(config)
