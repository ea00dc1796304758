"""Every shipped training config loads, validates and names its stages; the smoke variants stay tiny."""
import pytest

from embed_jax.train import stages


@pytest.mark.parametrize("name,arg", [("distill", None), ("distill", "smoke"), ("jasper", None),
                                      ("jasper", "smoke"), ("shrink", None),
                                      ("shrink", "smoke")])
def test_config_loads_with_every_stage(name, arg, request):
    load = request.getfixturevalue("load_config")
    config = load(name, arg)
    for stage in config.stage_order:
        assert config[stage].trainable in stages.TRAINABLE_CHOICES
        assert config[stage].num_steps > 0 and config[stage].learning_rate > 0
    assert config.data.global_batch_size > 0
    assert config.model.teacher_dim > 0 or config.loss.reduction_target == "pooled"


def test_jasper_is_the_papers_recipe(load_config):
    config = load_config("jasper", None)
    assert config.model.teacher_dim == 12288 and config.data.global_batch_size == 128
    assert [config[s].num_steps for s in config.stage_order] == [4000, 7000, 2200]
    assert [config[s].learning_rate for s in config.stage_order] == [1e-4, 8e-5, 7e-5]
    assert config.model.text_options.causal is False
