"""Every shipped config loads, with each of its documented `:arg`s: the training configs validate and name their
stages (the smoke variants stay tiny), the export config's variants pass the export's own key checks."""
import pytest

import kit
from embed_jax.teachers import export
from embed_jax.train.config import stage_config
from embed_jax.train.trainable import TRAINABLE_CHOICES

TRAINING_CONFIGS = [("distill", None), ("distill", "smoke"), ("jasper", None), ("jasper", "smoke"),
                    ("results", None), ("results", "small"), ("shrink", None), ("shrink", "smoke"),
                    ("shrink", "minilm"), ("shrink", "minilm,smoke"), ("vision", None), ("vision", "smoke")]


@pytest.mark.parametrize("name,arg", TRAINING_CONFIGS)
def test_training_config_loads_with_every_stage(name, arg):
    config = kit.load_config_file(name, arg)
    stages = [stage_config(config, name) for name in config.stage_order]  # typed, each value checked
    assert all(stage.trainable in TRAINABLE_CHOICES for stage in stages)
    assert config.data.global_batch_size > 0
    assert config.model.teacher_dim > 0 or config.loss.reduction_target == "pooled"
    if arg and "smoke" in arg:
        assert all(stage.num_steps <= 10 for stage in stages)


def test_jasper_is_the_papers_recipe():
    config = kit.load_config_file("jasper")
    assert config.model.teacher_dim == 12288 and config.data.global_batch_size == 128
    assert [config[s].num_steps for s in config.stage_order] == [4000, 7000, 2200]
    assert [config[s].learning_rate for s in config.stage_order] == [1e-4, 8e-5, 7e-5]
    assert config.model.text_options.causal is False


def test_results_small_is_stages_one_and_two_of_the_recipe_on_minilms_first_three_layers():
    full, small = kit.load_config_file("results"), kit.load_config_file("results", "small")
    assert small.model.text_options.to_dict() == {"num_layers": 3} and not full.model.text_options
    assert small.stage_order == ("stage1", "stage2") and full.stage_order[:2] == small.stage_order
    small.model.text_options, small.stage_order = full.model.text_options, full.stage_order
    assert small.to_dict() == full.to_dict()
    with pytest.raises(ValueError, match=r"configs/results.py:tiny: unknown word\(s\) \['tiny'\]; use a "
                                         r"comma-separated subset of \['small'\]"):
        kit.load_config_file("results", "tiny")


def test_vision_config_trains_the_tower_alone():
    config = kit.load_config_file("vision")
    assert config.stage_order == ("stage4",) and config.stage4.trainable == "vision"
    assert config.model.vision.tower and config.data.image_records_dir


@pytest.mark.parametrize("arg, init_from, smoke", [
    (None, "asset:all-mpnet-base-v2", False), ("smoke", "asset:all-mpnet-base-v2", True),
    ("minilm", "asset:all-MiniLM-L6-v2", False), ("minilm,smoke", "asset:all-MiniLM-L6-v2", True),
])
def test_shrink_config_defaults_to_mpnet_and_keeps_minilm(arg, init_from, smoke):
    config = kit.load_config_file("shrink", arg)
    assert config.model.init_from == init_from and tuple(config.model.reduction_dims) == (128, 64)
    assert (config.shrink.num_steps < 10) == smoke


@pytest.mark.parametrize("arg, message", [
    ("tiny", r"configs/shrink.py:tiny: unknown word\(s\) \['tiny'\]; use a comma-separated subset of \['mpnet', "
             r"'minilm', 'smoke'\]"),
    ("minilm,mpnet", r"names 2 of \['mpnet', 'minilm'\] \(\['minilm', 'mpnet'\]\); choose one"),
])
def test_shrink_config_refuses_unknown_or_conflicting_words(arg, message):
    with pytest.raises(ValueError, match=message):
        kit.load_config_file("shrink", arg)


@pytest.mark.parametrize("arg, max_texts, skip_texts", [(None, 3000, 0), ("smoke", 300, 0), ("eval", 256, 100_000),
                                                        ("full", None, 0)])
def test_export_config_variants_pass_the_exports_checks(arg, max_texts, skip_texts):
    config = kit.load_config_file("teachers", arg)
    settings = export.settings_from_config(config)
    assert [spec.name for spec in settings.teacher_specs] == ["minilm", "mpnet"]
    assert (config.corpus.max_texts, config.corpus.skip_texts) == (max_texts, skip_texts)


@pytest.mark.parametrize("name", ["distill", "jasper", "vision"])
def test_a_mistyped_smoke_argument_is_refused_naming_the_config(name):
    with pytest.raises(ValueError, match=rf"configs/{name}.py:smok: unknown word\(s\) \['smok'\]; use a "
                                         r"comma-separated subset of \['smoke'\]"):
        kit.load_config_file(name, "smok")


def test_two_export_sizes_at_once_are_refused():
    with pytest.raises(ValueError, match=r"configs/teachers.py:smoke,full: names 2 of \['smoke', 'full', 'eval'\]"):
        kit.load_config_file("teachers", "smoke,full")


def test_unknown_export_config_variant_lists_the_variants():
    with pytest.raises(ValueError, match=r"configs/teachers.py:tiny: unknown word\(s\) \['tiny'\]; use a "
                                         r"comma-separated subset of \['smoke', 'full', 'eval'\]"):
        kit.load_config_file("teachers", "tiny")
