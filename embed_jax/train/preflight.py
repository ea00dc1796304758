"""Every check a training config can fail, run before any work (no student built, no step compiled).

    check_config     train.*, data.*, each stage of stage_order, the mesh; the student's position table; the
                     vision tower's patch grid; the records folders (not empty, data.teacher_weights naming their
                     teachers, held-out records laid out as the training records and repeating none of them)

Each error is one `ConfigError` line naming the config key, the stage where it matters, and what to set instead
(docs/reliability.md lists them with the tests that hold them). The stages check again what they use; this module
makes the run fail in its first second rather than after a stage of training.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from embed_jax import losses
from embed_jax.assets import resolve_model_path
from embed_jax.data import pipeline
from embed_jax.models import hf_import, siglip
from embed_jax.train import batches, cached_stage, sharding, stages, start_anchor, text_stage, vision_stage
from embed_jax.train.train_state import log


class ConfigError(ValueError):
    """A config value no run can train with; the message names the key, the stage and the fix."""


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises a ConfigError for the first value that cannot work (see the module docstring)."""
    check_train_cadence(config.train)
    check_loss(config.loss)
    for stage_name in config.stage_order:
        check_stage(config, stage_name)
    check_batch(config)
    text_stages = [name for name in config.stage_order if not vision_stage.is_image_stage(config[name])]
    if text_stages:
        check_position_table(config, text_stages)
        check_text_records(config)
    if len(text_stages) < len(config.stage_order):
        check_vision_tower(config)


def check_loss(loss: ml_collections.ConfigDict) -> None:
    """loss.* applies to every stage: each weight, the margin, the ranking term's temperature (reduction_target, which
    may also be 'pooled', is text_stage.loss_target's to check)."""
    try:
        losses.LossConfig.from_mapping({key: value for key, value in dict(loss).items() if key != "reduction_target"})
    except ValueError as error:
        raise ConfigError(str(error)) from None


def positive_int(value: Any, key: str, why: str, example: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config key {key}={value!r}: {why}, so it must be a whole number ≥ 1; e.g. "
                          f"--config.{key}={example}")


def check_train_cadence(train: ml_collections.ConfigDict) -> None:
    """train.* applies to every stage: logging, evaluation and checkpoint intervals."""
    positive_int(train.log_every, "train.log_every", "every stage logs a row each log_every steps", 10)
    positive_int(train.checkpoint_every, "train.checkpoint_every", "every stage saves each checkpoint_every steps",
                 500)
    positive_int(train.keep_checkpoints, "train.keep_checkpoints", "every stage keeps that many checkpoints", 2)
    eval_every = train.eval_every
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 0:
        raise ConfigError(f"config key train.eval_every={eval_every!r} must be 0 (no evaluation) or a whole number "
                          "of steps, a multiple of train.log_every")
    if eval_every:
        positive_int(train.eval_batches, "train.eval_batches", "each evaluation averages that many batches", 8)
    if eval_every % train.log_every:
        raise ConfigError(f"config key train.eval_every={eval_every} must be a multiple of "
                          f"train.log_every={train.log_every}: evaluations are written with the logged metrics")


def check_stage(config: ml_collections.ConfigDict, stage_name: str) -> None:
    if stage_name not in config:
        raise ConfigError(f"config key stage_order names {stage_name!r}, but the config has no such section; "
                          f"sections: {sorted(key for key in config.keys() if key.startswith('stage'))}")
    stage = config[stage_name]
    positive_int(stage.num_steps, f"{stage_name}.num_steps", f"stage {stage_name} must train at least one step "
                 "(drop it from stage_order to skip it)", 100)
    for key in ("learning_rate", "head_learning_rate"):
        value = stage.get(key)
        if key == "head_learning_rate" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"config key {stage_name}.{key}={value!r}: stage {stage_name}'s peak learning rate "
                              f"must be a positive number, e.g. --config.{stage_name}.{key}=1e-4")
    if stage.trainable not in stages.TRAINABLE_CHOICES:
        raise ConfigError(f"config key {stage_name}.trainable={stage.trainable!r}: use one of "
                          f"{list(stages.TRAINABLE_CHOICES)}")
    if stage.get(cached_stage.CONFIG_KEY, False):
        cached_stage.check_stage(stage, stage_name)
    try:
        start_anchor.check_stage(stage, stage_name)
        start_anchor.check_start(config, stage, stage_name)  # builds two students, only for another start folder
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_batch(config: ml_collections.ConfigDict) -> None:
    """The global batch and lengths, and that the mesh's data-parallel devices share the batch evenly."""
    data = config.data
    positive_int(data.global_batch_size, "data.global_batch_size", "every stage's step reads that many records",
                 32)
    positive_int(data.max_length, "data.max_length", "texts are cut to that many tokens", 128)
    positive_int(data.get("length_grouping_window", 1), "data.length_grouping_window",
                 "1 is random batches, W > 1 regroups W batches (data.group_by)", 1)
    if data.get("group_by", "length") not in pipeline.GROUP_BY_CHOICES:
        raise ConfigError(f"config key data.group_by={data.group_by!r}: use one of {list(pipeline.GROUP_BY_CHOICES)} "
                          "(what a window of data.length_grouping_window batches is regrouped by: token length, or "
                          "teacher neighbourhood).")
    try:
        pipeline.check_length_buckets(tuple(data.length_buckets), data.max_length)
        mesh = sharding.make_mesh(config.mesh)
        sharding.check_batch_divisible(data.global_batch_size, mesh, key="data.global_batch_size")
    except ValueError as error:
        raise ConfigError(str(error)) from None


# ---------------------------------------------------------------------------------------------------- the student


def position_limit(hf_config: Mapping[str, Any], source: str) -> int:
    """The longest input the encoder's position table covers (RoBERTa-style tables start past the padding id)."""
    family, _ = hf_import.text_encoder_family(hf_config, source=source)
    encoder_config = family.config_from_hf(hf_config, source=source)
    return int(getattr(encoder_config, "max_sequence_length", encoder_config.max_position_embeddings))


def check_position_table(config: ml_collections.ConfigDict, stage_names: list[str]) -> None:
    """data.max_length beyond the student's position table fails at the first long batch (or never, in a short
    run); refuse it now, naming the limit. `truncate_long_inputs=True` asks the encoder to cut instead."""
    if not config.model.init_from or config.model.text_options.get("truncate_long_inputs", False):
        return
    folder = hf_import.resolve_model_folder(resolve_model_path(config.model.init_from))
    limit = position_limit(hf_import.read_config(folder), str(folder / "config.json"))
    if config.data.max_length > limit:
        raise ConfigError(
            f"config key data.max_length={config.data.max_length} (stages {', '.join(stage_names)}): the student "
            f"{config.model.init_from} has {limit} positions (max_position_embeddings in {folder / 'config.json'}); "
            f"set --config.data.max_length={limit} or less (and data.length_buckets within it)")


def check_vision_tower(config: ml_collections.ConfigDict) -> None:
    tower = config.model.vision.get("tower")
    tower = tower.to_dict() if hasattr(tower, "to_dict") else tower
    if tower:
        vision_stage.check_patch_grid(siglip.config_from_hf({**tower, "model_type": siglip.VISION_MODEL_TYPE},
                                                            source="config key model.vision.tower"))


# ---------------------------------------------------------------------------------------------------- records


def check_text_records(config: ml_collections.ConfigDict) -> None:
    """The text stages' records open, are not empty, fit model.teacher_dim and data.teacher_weights; held-out records
    line up with them and repeat none of them."""
    source = batches.open_records(config, config.data.records_dir, "data.records_dir")
    batches.teacher_scales(config, source)
    for stage_name in config.stage_order:
        if start_anchor.wanted(config[stage_name])[1]:
            try:
                start_anchor.records_start_teacher(config, stage_name, source.manifest)
            except ValueError as error:
                raise ConfigError(str(error)) from None
    if text_stage.evaluates(config):
        batches.check_disjoint(source, batches.open_eval_records(config), train_key="data.records_dir",
                               held_out_key="data.eval_records_dir", log=log)
