"""The staged training loop end to end on real records: stages chain, checkpoints resume, faults stop clearly."""
import json
from pathlib import Path

import jax
import numpy as np
import pytest

import kit
from embed_jax.data.pipeline import PipelineConfigError
from embed_jax.train import checkpoint, driver, loop, workdir
from embed_jax.train.stages import student as stage_student
from embed_jax.train.metrics import read_metrics


FC1 = f"dense_{kit.MINILM_DIM + kit.TINY_BERT_HIDDEN}"  # the two-teacher target of `default_stages`


@pytest.fixture(scope="module")
def default_stages(tiny_student, tmp_path_factory):
    """One run of configs/distill.py:smoke, every stage of its own order (stage1 and stage3_heads on cached pooled
    vectors, FC1 started from the start; stage2 on the encoder; stage3_pairs on WordNet pairs), on real
    pair records whose second teacher is the tiny student itself (the stand-in for mpnet, at mpnet's weight), with
    validation records of the same two teachers. Shared by the tests that inspect it: compiling its steps is most of
    a test's time."""
    from embed_jax.teachers import export  # torch at the edge: the exporter

    root = tmp_path_factory.mktemp("default_stages")
    (root / "records").mkdir()
    records = kit.export_wordnet_pair_records(root / "records", second_teacher=tiny_student)
    validation = kit.minilm_and_tiny_export_config(root / "eval_records", tiny_student, num_texts=16)
    validation.corpus.skip_texts = kit.TEACHER_RECORDS_COUNT
    export.run_export(validation)
    config = kit.load_config_file("distill", "smoke")
    assert tuple(config.stage_order) == ("stage1", "stage2", "stage3_heads", "stage3_pairs")
    config.model.init_from = str(tiny_student)
    config.model.teacher_dim = kit.MINILM_DIM + kit.TINY_BERT_HIDDEN
    config.data.teacher_weights = config.data.teacher_weights.replace("mpnet=", "tiny=")
    config.model.reduction_dims = (16,)
    config.data.records_dir = str(records)
    config.stage2.last_layers = 2
    config.data.eval_records_dir = validation.output_dir  # exercises the evaluation hook
    config.train.eval_every = 1
    config.train.eval_batches = 2
    return config, loop.train_and_evaluate(config, root / "run")


@pytest.mark.slow
def test_the_stages_run_chain_and_write_their_outputs(default_stages):
    smoke_config, results = default_stages
    assert [result.name for result in results] == ["stage1", "stage2", "stage3_heads", "stage3_pairs"]
    for result in results:
        rows = read_metrics(result.workdir / "metrics.jsonl")
        assert [row["step"] for row in rows][-1] == smoke_config[result.name].num_steps
        assert (result.workdir / "loss_curves.png").stat().st_size > 0
        assert list((result.workdir / "tensorboard").iterdir())
        assert all(np.isfinite(row["loss"]) for row in rows)
    # The last stage keeps the reduction head: its losses appear, FC1 keeps all three terms and adds the pair term.
    last = read_metrics(results[3].workdir / "metrics.jsonl")[-1]
    assert {f"{FC1}/cosine", "dense_16/similarity", "dense_16/relative_similarity"} <= set(last)
    assert "dense_16/cosine" not in last
    assert {"eval/loss", f"eval/{FC1}/cosine", "eval/dense_16/similarity"} <= set(last)
    assert json.loads((results[3].workdir / workdir.STUDENT_CONFIG_FILE).read_text())["heads"]["reduction_dims"] == [16]
    assert f"{FC1}/pairs" in last
    # The run's config, records folders absolute, for export and evaluation to find what the student learnt from.
    run_config = json.loads((results[0].workdir.parent / workdir.RUN_CONFIG_FILE).read_text())
    assert run_config["data"]["records_dir"] == str(Path(smoke_config.data.records_dir).resolve())
    assert run_config["stage2"]["num_steps"] == smoke_config.stage2.num_steps
    assert workdir.choose_stage(results[0].workdir.parent, None) == results[3].workdir  # the run's last stage


@pytest.mark.slow
def test_each_stage_trains_only_its_parameters(default_stages):
    smoke_config, results = default_stages
    params = [stage_student.load_stage_params(result) for result in results]
    encoder_layer0 = "text_encoder/encoder/layer/0/attention/self/query/kernel"
    encoder_layer3 = "text_encoder/encoder/layer/3/attention/self/query/kernel"
    fc1, reduction = f"heads/dense/{FC1}/kernel", "heads/dense/dense_16/kernel"
    init = stage_student.load_init_params(smoke_config)
    # Stage 1: FC1 moves, the encoder does not.
    assert not np.allclose(params[0][fc1], params[1][fc1])
    np.testing.assert_array_equal(params[0][encoder_layer3], init[encoder_layer3])
    # Stage 2: the last layers move, the first ones do not.
    assert not np.allclose(params[1][encoder_layer3], params[0][encoder_layer3])
    np.testing.assert_array_equal(params[1][encoder_layer0], init[encoder_layer0])
    # stage3_heads: the new reduction head is born and trained on cached vectors; the encoder stays as stage 2 left it.
    assert reduction not in params[1] and reduction in params[2]
    np.testing.assert_array_equal(params[2][encoder_layer3], params[1][encoder_layer3])
    # stage3_pairs: the heads and the last layers move, the first layer stays as stage 2 left it.
    assert not np.allclose(params[3][fc1], params[2][fc1])
    assert not np.allclose(params[3][reduction], params[2][reduction])
    assert not np.allclose(params[3][encoder_layer3], params[2][encoder_layer3])
    np.testing.assert_array_equal(params[3][encoder_layer0], params[2][encoder_layer0])


@pytest.mark.slow
def test_rerun_resumes_instead_of_starting_over(smoke_config, tmp_path, monkeypatch):
    smoke_config.stage_order = ("stage1",)
    smoke_config.stage1.num_steps = 4
    smoke_config.data.length_grouping_window = 2  # length-grouped batches resume like random ones
    monkeypatch.chdir(tmp_path)  # a relative --workdir, as users type it (Orbax itself needs absolute paths)
    first = loop.train_and_evaluate(smoke_config, "runs/relative")[0]
    smoke_config.stage1.num_steps = 6  # a longer run on the same workdir continues from step 4
    second = loop.train_and_evaluate(smoke_config, "runs/relative")[0]
    steps = [row["step"] for row in read_metrics(second.workdir / "metrics.jsonl")]
    assert first.final_step == 4 and second.final_step == 6
    assert steps.count(1) == 1 and 5 in steps  # step 1 logged once: the second run did not start over


def test_teacher_dim_that_does_not_match_the_records_is_refused(smoke_config, tmp_path):
    smoke_config.model.teacher_dim = 1152
    with pytest.raises(PipelineConfigError, match="model.teacher_dim=1152.*384"):
        loop.train_and_evaluate(smoke_config, tmp_path)


@pytest.mark.slow
def test_resume_that_changes_shapes_names_the_difference(smoke_config, tmp_path):
    smoke_config.stage_order = ("stage1",)
    smoke_config.stage1.num_steps = 2
    loop.train_and_evaluate(smoke_config, tmp_path)
    smoke_config.stage1.num_steps = 4
    smoke_config.stage1.reduction_heads = True
    with pytest.raises(checkpoint.CheckpointMismatchError, match="head_dims"):
        loop.train_and_evaluate(smoke_config, tmp_path)


@pytest.mark.slow
def test_non_finite_loss_stops_with_step_and_term_and_keeps_the_last_good_checkpoint(smoke_config, tmp_path):
    smoke_config.stage_order = ("stage1",)
    smoke_config.stage1.num_steps = 6
    smoke_config.stage1.learning_rate = 1e38  # the first update overflows FC1 to inf
    smoke_config.optimizer.clip_norm = 0.0
    smoke_config.optimizer.warmup_fraction = 0.0
    with pytest.raises(driver.NonFiniteLossError, match=r"step \d+: loss term 'dense_384/\w+'"):
        loop.train_and_evaluate(smoke_config, tmp_path)


@pytest.mark.slow
def test_a_stage_on_its_own_mesh_trains_as_on_the_configs(new_smoke_config, tmp_path, capsys):
    """Stage 2 on data=2 × fsdp=4, its frozen layers whole on every device (replicate_frozen), after a stage 1 on the
    config's 8-way data mesh gives the parameters of both stages on the config's mesh (sharded code equals unsharded
    code; the checkpoint moves between the meshes and holds the frozen layers as they were)."""
    finals = []
    for name, stage_mesh in (("config", ""), ("own", "data=2,fsdp=4")):
        config = new_smoke_config()
        config.stage_order = ("stage1", "stage2")
        config.stage2.mesh = stage_mesh
        config.stage2.replicate_frozen = bool(stage_mesh)
        results = loop.train_and_evaluate(config, tmp_path / name)
        finals.append(stage_student.load_stage_params(results[-1]))
    said = capsys.readouterr()
    assert "[stage2] on its own mesh (stage2.mesh='data=2,fsdp=4'): data=2 × fsdp=4 × tensor=1" in said.out + said.err
    assert "[stage1] on its own mesh" not in said.out + said.err
    assert ("[stage2] frozen parameters whole on each of the fsdp=4 devices (stage2.replicate_frozen=True); trainable "
            "ones split") in said.out + said.err
    assert finals[0].keys() == finals[1].keys()
    for path, on_config in finals[0].items():
        np.testing.assert_allclose(finals[1][path], on_config, rtol=2e-4, atol=2e-5, err_msg=path)


def test_global_batch_not_divisible_by_data_parallel_size_is_refused(smoke_config, tmp_path):
    smoke_config.mesh.data = 8
    smoke_config.data.global_batch_size = 12
    with pytest.raises(ValueError, match="data.global_batch_size"):
        loop.train_and_evaluate(smoke_config, tmp_path)


def test_evaluation_must_ride_on_logged_steps(smoke_config, tmp_path):
    smoke_config.data.eval_records_dir = smoke_config.data.records_dir
    smoke_config.train.log_every = 2
    smoke_config.train.eval_every = 3
    with pytest.raises(ValueError, match="train.eval_every=3 must be a multiple of train.log_every=2"):
        loop.train_and_evaluate(smoke_config, tmp_path)


@pytest.mark.slow
def test_self_distillation_shrinks_with_the_models_own_vectors(smoke_config, held_out_records, tmp_path):
    """No FC1, frozen encoder, reduction heads trained against the student's own pooled vectors."""
    smoke_config.model.teacher_dim = 0
    smoke_config.loss.reduction_target = "pooled"
    smoke_config.stage_order = ("stage1",)
    smoke_config.stage1.reduction_heads = True
    smoke_config.stage1.num_steps = 12
    smoke_config.stage1.learning_rate = 1e-2
    smoke_config.optimizer.warmup_fraction = 0.0
    # Random batches (the paper's), judged on the same records every time: at 1e-2, batches of like-length texts
    # alone (length grouping) pull the heads back and forth (measured: validation loss 0.83 → 0.46 → 1.83).
    smoke_config.data.length_grouping_window = 1
    smoke_config.data.eval_records_dir = str(held_out_records)
    smoke_config.train.eval_every, smoke_config.train.eval_batches = 2, 4
    result = loop.train_and_evaluate(smoke_config, tmp_path)[0]
    rows = read_metrics(result.workdir / "metrics.jsonl")
    assert {"dense_16/similarity", "dense_16/relative_similarity"} <= set(rows[-1])
    assert not any("cosine" in name for name in rows[-1])
    evaluations = [row["eval/loss"] for row in rows if "eval/loss" in row]
    assert len(evaluations) == 6 and evaluations[-1] < evaluations[0]


def test_self_distillation_with_an_fc1_is_refused(smoke_config, tmp_path):
    smoke_config.loss.reduction_target = "pooled"
    with pytest.raises(ValueError, match="model.teacher_dim=0"):
        loop.train_and_evaluate(smoke_config, tmp_path)
