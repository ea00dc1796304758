"""Stage 1 from cached pooled vectors (embed_jax/train/stages/cached.py; its step: embed_jax/train/cached_heads.py):
same loss and gradients as the encoder's step, a stage that hands over to stage 2 like the uncached one, exact
resume, sharding-invariant, and a clear refusal of a stage whose encoder trains."""
import jax
import numpy as np
import pytest
from flax import nnx

from embed_jax.train import batches, cached_heads, driver, loop, sharding, step as steps, trained_student
from embed_jax.train.config import stage_config
from embed_jax.train.stages import student as stage_student, text
from embed_jax.train.train_state import param_state, prepare_training
from embed_jax.train.trainable import split_trainable, trainable_filter
from embed_jax.train.preemption import PreemptionGuard
from embed_jax.train.metrics import read_metrics
from parity import assert_trees_close

FC1 = "heads/dense/dense_384/kernel"


def cached_config(smoke_config, *, stage_order=("stage1",), num_steps=6):
    smoke_config.stage_order = stage_order
    smoke_config.stage1.kind = "cached_pooled"
    smoke_config.stage1.num_steps = num_steps
    smoke_config.stage1.learning_rate = 1e-2
    smoke_config.train.checkpoint_every = 100  # the end of the stage (and a stop request) save regardless
    smoke_config.data.length_grouping_window = 2
    return smoke_config


@pytest.mark.slow
def test_cached_loss_and_gradients_equal_the_encoder_step(smoke_config):
    student = stage_student.build_student(smoke_config, stage_config(smoke_config, "stage1"), seed=0)
    paths = [path for path, _ in nnx.to_flat_state(param_state(student))]
    graphdef, trainable, frozen = split_trainable(student, trainable_filter("heads", paths))
    loss_config = text.loss_config_for(smoke_config, student)
    mesh = sharding.make_mesh(smoke_config.mesh)
    source = batches.open_records(smoke_config, smoke_config.data.records_dir, "data.records_dir")
    local = next(iter(batches.make_batches(smoke_config, source, seed=0)))
    batch = batches.global_batch(local, sharding.batch_sharding(mesh), pad_token_id=0)

    def encoder_loss(trainable):
        return steps.compute_loss(trainable, frozen, batch, graphdef=graphdef, loss_config=loss_config)

    pooled = student(batch["input_ids"], batch["attention_mask"])["pooled"]

    def cached_loss(trainable):
        return cached_heads.heads_loss(trainable, frozen, pooled, batch["teacher"], graphdef=graphdef,
                                       loss_config=loss_config)

    (loss, terms), grads = jax.value_and_grad(encoder_loss, has_aux=True)(trainable)
    (cached, cached_terms), cached_grads = jax.value_and_grad(cached_loss, has_aux=True)(trainable)
    np.testing.assert_allclose(float(cached), float(loss), rtol=1e-6)
    assert set(cached_terms) == set(terms)
    assert_trees_close(cached_grads, grads, rtol=1e-5)


@pytest.fixture(scope="module")
def handover(new_smoke_config, held_out_records, tmp_path_factory):
    """Cached stage 1 (evaluated every 2 steps) then stage 2, shared by the tests that inspect it."""
    config = cached_config(new_smoke_config(), stage_order=("stage1", "stage2"))
    config.data.eval_records_dir = str(held_out_records)  # exercises the cached evaluation
    config.train.eval_every, config.train.log_every, config.train.eval_batches = 2, 1, 2
    return config, loop.train_and_evaluate(config, tmp_path_factory.mktemp("handover"))


@pytest.fixture(scope="module")
def straight(new_smoke_config, tmp_path_factory):
    """Six uninterrupted cached steps on the default mesh (8 devices along data)."""
    config = cached_config(new_smoke_config())
    return stage_student.load_stage_params(loop.train_and_evaluate(config, tmp_path_factory.mktemp("straight"))[0])


@pytest.mark.slow
def test_cached_stage1_trains_fc1_only_and_hands_over_to_stage2(handover):
    config, (first, second) = handover
    rows = read_metrics(first.workdir / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert {"eval/loss", "eval/dense_384/cosine", "dense_384/relative_similarity"} <= set(rows[-1])
    assert rows[-1]["loss"] < rows[0]["loss"]  # 6 steps at 1e-2 on a fresh FC1
    init, after_stage1 = stage_student.load_init_params(config), stage_student.load_stage_params(first)
    encoder = "text_encoder/encoder/layer/3/attention/self/query/kernel"
    np.testing.assert_array_equal(after_stage1[encoder], init[encoder])
    assert not np.allclose(after_stage1[FC1], init[FC1])
    # Stage 2 starts from the cached stage's FC1: its first logged loss is the one stage 1 ended near, not a fresh one.
    assert second.final_step == config.stage2.num_steps
    stage2_first = read_metrics(second.workdir / "metrics.jsonl")[0]["loss"]
    assert stage2_first < rows[0]["loss"]


@pytest.mark.slow
def test_cached_evaluation_equals_the_uncached_evaluator(handover):
    """Stage 1's final params scored by text.make_evaluator (the encoder on every batch) give the validation loss
    the cached stage logged at its last step: the cached eval rows are the same batches."""
    config, (first, _) = handover
    student = trained_student.load_student(first.workdir)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    state = prepare_training(student, stage_config(config, "stage1"), config.optimizer, mesh)
    evaluate = text.make_evaluator(config, state, text.loss_config_for(config, student),
                                   sharding.batch_sharding(mesh))
    uncached = evaluate(state.trainable)
    logged = read_metrics(first.workdir / "metrics.jsonl")[-1]
    for name in ("eval/loss", "eval/dense_384/cosine", "eval/dense_384/similarity"):
        np.testing.assert_allclose(logged[name], uncached[name], rtol=1e-5)


@pytest.mark.slow
def test_interrupted_cached_stage_resumes_to_the_same_weights(smoke_config, straight, tmp_path, monkeypatch):
    config = cached_config(smoke_config)

    calls = {"count": 0}
    original = PreemptionGuard.should_stop

    def stop_at_step_3(self, step_number):
        calls["count"] += 1
        return step_number == 3 or original(self, step_number)

    monkeypatch.setattr(PreemptionGuard, "should_stop", stop_at_step_3)
    with pytest.raises(driver.Preempted):
        loop.train_and_evaluate(config, tmp_path / "resumed")
    monkeypatch.setattr(PreemptionGuard, "should_stop", original)
    resumed = loop.train_and_evaluate(config, tmp_path / "resumed")[0]
    assert calls["count"] == 3 and resumed.final_step == 6
    np.testing.assert_allclose(stage_student.load_stage_params(resumed)[FC1], straight[FC1], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_cached_stage_is_the_same_on_any_mesh(smoke_config, straight, tmp_path):
    config = cached_config(smoke_config)
    config.mesh.data, config.mesh.tensor = 2, 4  # FC1 split over 4 devices, batches over 2
    mixed = stage_student.load_stage_params(loop.train_and_evaluate(config, tmp_path / "data2_tensor4")[0])
    np.testing.assert_allclose(mixed[FC1], straight[FC1], rtol=1e-5, atol=1e-6)


def test_cached_stage_with_a_trainable_encoder_is_refused(smoke_config, tmp_path):
    config = cached_config(smoke_config, stage_order=("stage2",))
    config.stage2.kind = "cached_pooled"
    with pytest.raises(ValueError, match=r"stage2\.kind='cached_pooled' needs stage2\.trainable='heads'"):
        loop.train_and_evaluate(config, tmp_path / "run")
