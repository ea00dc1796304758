"""Stage 4 end to end on the tiny student: caption export → `train_and_evaluate` with configs/vision.py:smoke →
zero-shot evaluation and export; and the stage's refusals (records of another text path, other heads, none)."""
import numpy as np
import pytest

import kit
from embed_jax.data.records import RecordsError


@pytest.fixture(scope="module")
def settings(tiny_vision_settings):
    return tiny_vision_settings


def vision_config(settings, text_folder, text_stage, records):
    tower, num_tokens, _ = settings
    config = kit.load_config_file("vision", "smoke")
    config.model.init_from = str(text_folder)
    config.model.text_student = str(text_stage)
    config.model.teacher_dim, config.model.reduction_dims = 24, (8,)
    config.model.vision.tower = dict(tower)
    config.model.vision.num_tokens = num_tokens
    config.data.image_records_dir = str(records)
    return config


@pytest.fixture(scope="module")
def trained(settings, tmp_path_factory, tiny_text_folder, text_stage, caption_records):
    from embed_jax.train import loop

    workdir = tmp_path_factory.mktemp("vision_run")
    config = vision_config(settings, tiny_text_folder, text_stage, caption_records)
    results = loop.train_and_evaluate(config, workdir)
    return workdir, results


@pytest.mark.slow
def test_stage4_trains_the_tower_only_and_keeps_the_text_path(trained, text_stage):
    from embed_jax.train.stages.student import flat_params
    from embed_jax.train.trained_student import load_student

    workdir, results = trained
    assert [result.name for result in results] == ["stage4"] and results[0].final_step == 3
    assert np.isfinite(results[0].last_metrics["loss"])
    after = flat_params(load_student(workdir / "stage4"))
    before = flat_params(load_student(text_stage))
    for name, value in before.items():  # encoder and heads: frozen, bit for bit
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert any(name.startswith("vision/") for name in after)


@pytest.mark.slow
def test_zero_shot_evaluation_and_export_of_the_trained_stage(trained, tiny_text_folder, tmp_path):
    from embed_jax.convert import hf_vision
    from embed_jax.eval import digits, zero_shot
    from embed_jax.train.trained_student import load_student

    workdir, _ = trained
    student = load_student(workdir / "stage4")
    figures = digits.evaluate_digits(student, str(tiny_text_folder))
    assert set(figures) == set(digits.METRICS) and all(0.0 <= value <= 1.0 for value in figures.values())
    assert zero_shot.main([f"--workdir={workdir}", f"--output={tmp_path / 'z.json'}"]) == 0
    description = hf_vision.export_vision(student, tmp_path / "export")
    assert description["pool"]["num_tokens"] == student.num_image_tokens


@pytest.mark.slow
def test_records_of_another_text_path_are_refused(settings, tmp_path, tiny_text_folder, caption_records):
    from embed_jax.train import loop

    other_stage = settings[2](tmp_path / "other" / "stage1", tiny_text_folder, seed=1)
    config = vision_config(settings, tiny_text_folder, other_stage, caption_records)
    with pytest.raises(RecordsError, match="not this student's text path"):
        loop.train_and_evaluate(config, tmp_path / "run")


@pytest.mark.slow
def test_records_of_other_heads_and_no_records_are_named(settings, tmp_path, tiny_text_folder, text_stage, caption_records):
    from embed_jax.train import loop

    config = vision_config(settings, tiny_text_folder, text_stage, caption_records)
    config.model.text_student = ""  # fresh heads of other dims from init_from
    config.model.teacher_dim, config.model.reduction_dims = 16, ()
    with pytest.raises(RecordsError, match="data.image_records_dir.*dense_24.*dense_16"):
        loop.train_and_evaluate(config, tmp_path / "heads")
    config = vision_config(settings, tiny_text_folder, text_stage, "")
    with pytest.raises(ValueError, match="data.image_records_dir is empty"):
        loop.train_and_evaluate(config, tmp_path / "none")


@pytest.mark.slow
def test_text_student_that_is_no_stage_folder_is_named(settings, tmp_path, tiny_text_folder, caption_records):
    from embed_jax.train import loop

    config = vision_config(settings, tiny_text_folder, tmp_path / "no_stage", caption_records)
    with pytest.raises(FileNotFoundError, match=r"model.text_student=.*no_stage.*student_config.json is missing"):
        loop.train_and_evaluate(config, tmp_path / "run")
