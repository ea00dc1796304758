"""A supervised pair stage (kind='pairs', docs/training.md "The supervised pair stage"): the text stage's student and
step on batches of labelled WordNet pairs from the records, with the pair term on FC1 beside the paper's losses.

    batches   half usage examples, half their synsets' definitions, both records (data/wordnet_pairs.py): the
              validation split's synsets left out, a held-out one refused before any work
    loss      the paper's three losses against the records' target + contrastive_weight · InfoNCE over the batch's
              definitions (+ contrastive_kl_weight · listwise KL toward the target's scores): embed_jax/contrastive.py
    evaluator the text stage's held-out loss (data.eval_records_dir: plain records, so no pair term)

It uses labels, so it is supervised: the distillation stages before it use none.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import ml_collections

from embed_jax import losses
from embed_jax.models.student import Student
from embed_jax.train import batches, driver
from embed_jax.train.config import StageConfig
from embed_jax.train.console import log
from embed_jax.train.stages import batch as batch_stage, student as stage_student, text
from embed_jax.train.stages.student import StageResult


def pair_loss_config(config: ml_collections.ConfigDict, stage: StageConfig, student: Student) -> losses.LossConfig:
    """The text stage's loss config with the stage's pair terms."""
    return dataclasses.replace(text.loss_config_for(config, student), contrastive_weight=stage.contrastive_weight,
                               contrastive_temperature=stage.contrastive_temperature,
                               contrastive_kl_weight=stage.contrastive_kl_weight)


def run_pair_stage(config: ml_collections.ConfigDict, stage_name: str, stage: StageConfig, workdir: Path,
                   previous: StageResult | None) -> StageResult:
    cadence = driver.Cadence.from_config(config.train, stage.num_steps, evaluates=text.evaluates(config))
    mesh = stage_student.stage_mesh(config, stage_name, stage, log)
    source = batches.open_records(config, config.data.records_dir, "data.records_dir")
    table = batches.pair_table(config, source, stage_name, log=log)
    student = stage_student.build_student(config, stage, seed=int(config.seed))
    if previous is not None:
        stage_student.restore_previous_stage(previous, student, mesh, log)
    batch_step = batch_stage.make_batch_step(student, stage, config.optimizer, pair_loss_config(config, stage, student),
                                             mesh, target="records", stage_name=stage_name)
    eval_loss = text.loss_config_for(config, student)
    return batch_stage.run_batch_stage(
        config, stage_name, workdir / stage_name, batch_step=batch_step, cadence=cadence, student=student,
        manifest=source.manifest,
        data=batches.make_pair_batches(config, source, table, seed=stage.data_seed(config.seed), log=log),
        title=f"{stage_name}: {stage.trainable}, supervised on WordNet pairs",
        make_evaluator=(lambda state, batch_sharding: text.make_evaluator(config, state, eval_loss, batch_sharding))
        if cadence.eval_every else None)
