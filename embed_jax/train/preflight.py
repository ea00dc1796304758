"""Every check a training config can fail, run before any work (no student built, no step compiled).

    check_config     train.*, loss.*, data.*, each stage of stage_order, the mesh; the student's position table; a
                     stage's interpolation start (the trained encoder's shapes); the vision tower's patch grid; the
                     records folders (not empty, data.teacher_weights naming their teachers, the start among them for
                     fc1_init='start', held-out records laid out as the training records and repeating none of them;
                     a pair stage's WordNet pairs: none held out, enough for one batch)

Each error is one `ConfigError` line naming the config key, the stage where it matters, and what to set instead
(docs/reliability.md lists them with the tests that hold them). Each stage section is checked as its typed
StageConfig (embed_jax/train/config.py); the stages then read those typed values and check nothing again.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from embed_jax import losses
from embed_jax.assets import resolve_model_path
from embed_jax.data import pipeline
from embed_jax.models import hf_import, siglip
from embed_jax.train import batches, config as train_config, sharding
from embed_jax.train.stages import start_anchor, text, vision
from embed_jax.train.config import ConfigError, StageConfig, positive_int
from embed_jax.train.console import log


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises a ConfigError for the first value that cannot work (see the module docstring)."""
    check_train_cadence(config.train)
    check_loss(config.loss)
    stages = {name: train_config.stage_config(config, name) for name in config.stage_order}
    check_batch(config)
    check_stage_meshes(config, stages)
    check_tokenizer(config)
    check_matryoshka(config)
    check_interpolation_starts(config, stages)
    text_stages = [name for name, stage in stages.items() if stage.kind != "images"]
    if text_stages:
        check_position_table(config, text_stages)
        check_last_layers(config, stages)
        check_text_records(config, stages)
    if len(text_stages) < len(stages):
        check_vision_tower(config)


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


def check_loss(loss: ml_collections.ConfigDict) -> None:
    """loss.* applies to every stage: each weight, the margin, the ranking term's temperature (reduction_target, which
    may also be 'pooled', is text.loss_target's to check; matryoshka_dims, against FC1's width, check_matryoshka's)."""
    try:
        losses.LossConfig.from_mapping({key: value for key, value in dict(loss).items()
                                        if key not in ("reduction_target", "matryoshka_dims")})
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_matryoshka(config: ml_collections.ConfigDict) -> None:
    """loss.matryoshka_dims: increasing prefixes of FC1, narrower than model.teacher_dim."""
    dims = tuple(config.loss.get("matryoshka_dims", ()) or ())
    if not dims:
        return
    if not config.model.teacher_dim:
        raise ConfigError(f"config key loss.matryoshka_dims={dims}: prefixes are taken of FC1, and this run has none "
                          "(model.teacher_dim=0); train separate heads with model.reduction_dims instead")
    try:
        losses.check_matryoshka_dims(dims, int(config.model.teacher_dim))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_batch(config: ml_collections.ConfigDict) -> None:
    """The global batch and lengths, and that the mesh's data-parallel devices share the batch evenly."""
    data = config.data
    positive_int(data.global_batch_size, "data.global_batch_size", "every stage's step reads that many records",
                 32)
    positive_int(data.max_length, "data.max_length", "texts are cut to that many tokens", 128)
    positive_int(data.length_grouping_window, "data.length_grouping_window",
                 "1 is random batches, W > 1 regroups W batches (data.group_by)", 1)
    if data.group_by not in pipeline.GROUP_BY_CHOICES:
        raise ConfigError(f"config key data.group_by={data.group_by!r}: use one of {list(pipeline.GROUP_BY_CHOICES)} "
                          "(what a window of data.length_grouping_window batches is regrouped by: token length, or "
                          "teacher neighbourhood).")
    if data.get("group_by", "length") == "teacher" and data.get("length_grouping_window", 1) == 1:
        # Window 1 is how a config asks for random batches (docs/training.md), whatever group_by a base config set.
        log("[preflight] data.group_by='teacher' with data.length_grouping_window=1: a window of one batch is not "
            "regrouped, so batches are random (no teacher grouping); set --config.data.length_grouping_window to the "
            "number of batches to regroup (configs/distill.py uses 64) to group them by teacher")
    try:
        pipeline.check_length_buckets(tuple(data.length_buckets), data.max_length)
        mesh = sharding.make_mesh(config.mesh)
        sharding.check_batch_divisible(data.global_batch_size, mesh, key="data.global_batch_size")
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_stage_meshes(config: ml_collections.ConfigDict, stages: dict[str, StageConfig]) -> None:
    """A stage's own mesh fills this run's devices and shares the global batch evenly, before any stage trains."""
    for name, stage in stages.items():
        if not stage.mesh:
            continue
        try:
            mesh = sharding.make_mesh(stage.mesh_config(config.mesh), key=stage.mesh_key(name))
            sharding.check_batch_divisible(int(config.data.global_batch_size), mesh)
        except ValueError as error:
            raise ConfigError(f"{error} (stage {name} trains on its own mesh, {name}.mesh={stage.mesh!r})") from None


# ---------------------------------------------------------------------------------------------------- the student


def check_tokenizer(config: ml_collections.ConfigDict) -> None:
    """data.tokenizer, where set, must hold model.init_from's vocabulary: the student's token embeddings are
    init_from's, and every reader of the trained stage (embed_jax/train/trained_student.py) tokenises with the run's
    one tokenizer. A folder without a tokenizer.json (e.g. converted weights) leaves data.tokenizer the only one."""
    tokenizer, init_from = str(config.data.tokenizer), str(config.model.init_from)
    if not tokenizer or not init_from:
        return
    tokenizer_folder, init_folder = resolve_model_path(tokenizer), resolve_model_path(init_from)
    if tokenizer_folder.resolve() == init_folder.resolve() or not (init_folder / "tokenizer.json").is_file():
        return
    ours, theirs = vocabulary(tokenizer_folder), vocabulary(init_folder)
    if ours != theirs:
        differing = sorted(set(ours.items()) ^ set(theirs.items()))
        raise ConfigError(
            f"config keys data.tokenizer={tokenizer!r} and model.init_from={init_from!r} name different tokenizers "
            f"({len(ours)} vs {len(theirs)} tokens, e.g. {differing[0][0]!r} differs): the student's token embeddings "
            "are init_from's, so its texts must be tokenised with init_from's vocabulary, and evaluation and export "
            "read the run's one tokenizer. Leave data.tokenizer empty (init_from's own tokenizer), or point it at a "
            "copy of init_from's tokenizer files.")


def vocabulary(folder) -> dict[str, int]:
    """{token: id} of a folder's tokenizer.json, as the pipeline loads it (data/pipeline.py's load_tokenizer)."""
    tokenizer, _ = pipeline.load_tokenizer(str(folder), 1)
    return tokenizer.get_vocab()


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


def encoder_depth(config: ml_collections.ConfigDict) -> int | None:
    """How many layers the student's text encoder has: model.text_options.num_layers, else init_from's config.json
    (None when there is no init folder to read)."""
    if config.model.text_options.get("num_layers"):
        return int(config.model.text_options.num_layers)
    if not config.model.init_from:
        return None
    folder = hf_import.resolve_model_folder(resolve_model_path(config.model.init_from))
    hf_config = hf_import.read_config(folder)
    family, _ = hf_import.text_encoder_family(hf_config, source=str(folder / "config.json"))
    return int(family.config_from_hf(hf_config, source=str(folder / "config.json")).num_hidden_layers)


def check_last_layers(config: ml_collections.ConfigDict, stages: Mapping[str, StageConfig]) -> None:
    """A stage that unfreezes more layers than the encoder has would fail when it builds its split, after the stages
    before it trained: refuse it now, naming the stage's key and the depth."""
    depth = None
    for name, stage in stages.items():
        if stage.trainable != "heads+last_layers":
            continue
        depth = encoder_depth(config) if depth is None else depth
        if depth is not None and stage.last_layers > depth:
            raise ConfigError(f"config key {name}.last_layers={stage.last_layers}: the student's text encoder "
                              f"({config.model.init_from}) has {depth} layers; choose 1 to {depth}, e.g. "
                              f"--config.{name}.last_layers={depth}")


def check_interpolation_starts(config: ml_collections.ConfigDict, stages: Mapping[str, StageConfig]) -> None:
    """A stage's interpolation_start other than model.init_from must have the trained encoder's parameters and shapes
    (builds two students, only for such a stage)."""
    for name, stage in stages.items():
        try:
            start_anchor.check_start(config, stage, name)
        except ValueError as error:
            raise ConfigError(str(error)) from None


def check_vision_tower(config: ml_collections.ConfigDict) -> None:
    tower = config.model.vision.tower
    tower = tower.to_dict() if hasattr(tower, "to_dict") else tower
    if tower:
        vision.check_patch_grid(siglip.config_from_hf({**tower, "model_type": siglip.VISION_MODEL_TYPE},
                                                            source="config key model.vision.tower"))


# ---------------------------------------------------------------------------------------------------- records


def check_text_records(config: ml_collections.ConfigDict, stages: Mapping[str, StageConfig]) -> None:
    """The text stages' records open, are not empty, fit model.teacher_dim and data.teacher_weights, and have the start
    among their teachers where a stage's FC1 starts from it (fc1_init='start'); a pair stage's records hold enough
    WordNet pairs and none from the hold-out; held-out records line up with them and repeat none of them."""
    source = batches.open_records(config, config.data.records_dir, "data.records_dir")
    batches.teacher_scales(config, source)
    for name, stage in stages.items():
        if stage.fc1_init == "start":
            try:
                start_anchor.records_start_teacher(config, name, source.manifest)
            except ValueError as error:
                raise ConfigError(str(error)) from None
    for name, stage in stages.items():
        if stage.kind == "pairs":
            try:
                batches.pair_table(config, source, name, log=log)
            except ValueError as error:
                raise ConfigError(str(error)) from None
    if text.evaluates(config):
        batches.check_disjoint(source, batches.open_eval_records(config), train_key="data.records_dir",
                               held_out_key="data.eval_records_dir", log=log)
