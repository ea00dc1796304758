"""The config schema every training config starts from, with the paper's defaults (docs/method.md §3–4).

Keys (override any with --config.section.key=value):
  seed
  model.init_from        HF / sentence-transformers folder of the student's encoder ("asset:NAME" for bundled ones)
  model.teacher_dim      FC1's width = the records' concatenated teacher dim (checked against the manifest)
  model.reduction_dims   extra independent heads, added in the stages with reduction_heads=True
  model.pooling          "" = the folder's own (1_Pooling), else mean | cls | last
  model.dtype / param_dtype, model.text_options (scan, remat, causal, ...)
  model.text_student     image stages: a trained text stage folder whose text path (encoder + heads) they start from
  model.vision.*         image stages: tower (SigLIP config.json dict) or folder, pool_mode, num_tokens
  data.records_dir, data.tokenizer ("" = model.init_from), data.max_length, data.length_buckets,
  data.global_batch_size, data.length_grouping_window, data.group_by (length | teacher)
  data.teacher_weights   "" (equal, the paper) or "minilm=0.25,mpnet=0.75": each teacher's share of the target's
                         cosine, applied to the records' vectors as they are read (docs/training.md)
  data.image_records_dir image–caption records for image stages (python -m embed_jax.teachers.caption_export)
  loss.*                 weights 10/200/20 and margin 0.015 (docs/method.md §3), reduction_target teacher | main_head,
                         matryoshka_dims (FC1's prefixes trained as embeddings: truncate_dim works; docs/losses.md),
                         ranking_weight (0: off) and ranking_temperature of a listwise term on FC1 (embed_jax/ranking.py)
  optimizer.*            AdamW, warm-up + cosine decay, clipping (embed_jax/train/optimizer.py)
  mesh.data/fsdp/tensor  device mesh sizes, -1 = the rest
  data.eval_records_dir, train.eval_every, train.eval_batches   held-out loss, logged as eval/<term>
  train.log_every, checkpoint_every, keep_checkpoints
  stage_order            which stage sections run, in order; each stage section is a StageConfig (below), made
                         with `stage(...)`: kind, trainable, learning_rate, num_steps, head_learning_rate, ...

Every key is declared here once, with its default; preflight.py checks the values before any work, and the stages
read typed values (`stage_config`) instead of falling back to defaults of their own.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import ml_collections
from ml_collections import config_dict

from embed_jax import contrastive
from embed_jax.train import sharding
from embed_jax.train.trainable import TRAINABLE_CHOICES


class ConfigError(ValueError):
    """A config value no run can train with; the message names the key, the stage and the fix."""


# ---------------------------------------------------------------------------------------------------- a stage

# How a stage gets its batches (embed_jax/train/stages/): an encoder pass over teacher records every step; the heads
# alone on pooled vectors computed once (exact while the encoder is frozen: stages/cached.py); image–caption records
# through the vision tower (stage 4, docs/method.md §4: stages/vision.py); labelled WordNet pairs from the records, a
# supervised stage (stages/pairs.py, docs/training.md "The supervised pair stage").
KINDS = ("records", "cached_pooled", "images", "pairs")
# A cached stage's FC1 at step 0: random (""), or from the start's own vectors ("start": stages/start_anchor.py).
FC1_INITS = ("", "start")


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One stage of config.stage_order, typed. `check(name)` refuses a value no run can train with, naming
    `<name>.<key>`; `stage_config(config, name)` reads and checks a config's section."""
    # Which parameters train (embed_jax/train/trainable.py): heads | heads+last_layers | all | vision | encoder+heads.
    trainable: str
    # Peak learning rate of the stage's schedule (warm-up, then cosine decay: embed_jax/train/optimizer.py).
    learning_rate: float
    # Steps of this stage (a resumed run continues up to it).
    num_steps: int
    # records | cached_pooled (trainable='heads' only) | images (trainable='vision' only): see KINDS.
    kind: str = "records"
    # The heads' peak learning rate where it differs from the encoder's (None: learning_rate for everything):
    # trained or fresh heads keep a head's rate while pretrained layers move slowly (docs/training.md).
    head_learning_rate: float | None = None
    # trainable='heads+last_layers': how many of the encoder's last layers train (docs/method.md §4: 3).
    last_layers: int = 3
    # Whether the model.reduction_dims heads exist in this stage (docs/method.md §4: they join in stage 3).
    reduction_heads: bool = False
    # Added to config.seed for this stage's data order: another order of the same records.
    data_seed_offset: int = 0
    # kind='cached_pooled' only (embed_jax/train/stages/start_anchor.py, docs/training.md "Keeping retrieval"):
    # "start": FC1 starts as identity onto the start teacher's block of the target and least squares on the rest,
    # fitted on the cached rows; "": a random FC1.
    fc1_init: str = ""
    # kind='cached_pooled' only: WiSE-FT, the encoder becomes (1 − α)·start + α·trained before pooling (1: unchanged).
    start_interpolation: float = 1.0
    # The start of that interpolation: "" is model.init_from, else a folder of the trained encoder's architecture.
    interpolation_start: str = ""
    # This stage's own mesh, 'data=D,fsdp=F[,tensor=T]' ("": config.mesh). A frozen encoder needs no FSDP: stage 1
    # compiles to 52% MFU (est.) data-parallel on v5p-128 against 37% under the config's FSDP (docs/launch.md).
    mesh: str = ""
    # Frozen parameters whole on every fsdp device (still split over `tensor`) instead of split like the trainable
    # ones: the frozen layers then run without weight all-gathers, for their full bytes on every chip. The compiler
    # prices it faster on some slices (v5p-128, configs/jasper.py's stage 1: 37% → 53% MFU est.) and slower on others
    # (v6e-16: 41% → 38%): docs/launch.md "Frozen parameters, replicated".
    replicate_frozen: bool = False
    # kind='pairs' only (embed_jax/contrastive.py): the weight of the pair term (a usage example against every
    # definition of the batch, its own the positive) beside the paper's losses, its temperature, and the weight of a
    # listwise KL toward the target's in-batch scores at that temperature.
    contrastive_weight: float = 1.0
    contrastive_temperature: float = contrastive.DEFAULT_TEMPERATURE
    contrastive_kl_weight: float = 0.0

    def mesh_config(self, config_mesh: Any) -> Any:
        """The mesh sizes this stage trains on: its own `mesh`, else the config's."""
        return sharding.parse_mesh_sizes(self.mesh, key="mesh") if self.mesh else config_mesh

    def mesh_key(self, name: str) -> str:
        """The config key that set this stage's mesh, for errors."""
        return f"{name}.mesh" if self.mesh else "mesh"

    def data_seed(self, seed: int) -> int:
        """The seed of the stage's data stream: config.seed, shifted by data_seed_offset (another order)."""
        return int(seed) + self.data_seed_offset

    def check(self, name: str) -> None:
        """Raises a ConfigError naming `<name>.<key>` for the first value no run can train with."""
        positive_int(self.num_steps, f"{name}.num_steps", f"stage {name} must train at least one step (drop it "
                     "from stage_order to skip it)", 100)
        for key in ("learning_rate", "head_learning_rate"):
            value = getattr(self, key)
            if key == "head_learning_rate" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                       and value > 0):
                raise ConfigError(f"config key {name}.{key}={value!r}: stage {name}'s peak learning rate must be a "
                                  f"positive number, e.g. --config.{name}.{key}=1e-4")
        if self.trainable not in TRAINABLE_CHOICES:
            raise ConfigError(f"config key {name}.trainable={self.trainable!r}: use one of {list(TRAINABLE_CHOICES)}")
        if self.kind not in KINDS:
            raise ConfigError(f"config key {name}.kind={self.kind!r}: use one of {list(KINDS)}")
        positive_int(self.last_layers, f"{name}.last_layers", "trainable='heads+last_layers' trains that many of the "
                     "encoder's last layers", 3)
        if not isinstance(self.reduction_heads, bool):
            raise ConfigError(f"config key {name}.reduction_heads={self.reduction_heads!r}: True or False (whether "
                              "the model.reduction_dims heads join in this stage)")
        if isinstance(self.data_seed_offset, bool) or not isinstance(self.data_seed_offset, int):
            raise ConfigError(f"config key {name}.data_seed_offset={self.data_seed_offset!r}: a whole number "
                              "added to config.seed for this stage's data order, e.g. 0")
        if not isinstance(self.replicate_frozen, bool):
            raise ConfigError(f"config key {name}.replicate_frozen={self.replicate_frozen!r}: True (the frozen "
                              "parameters whole on every fsdp device) or False (split like the trainable ones)")
        if not isinstance(self.mesh, str):
            raise ConfigError(f"config key {name}.mesh={self.mesh!r}: 'data=D,fsdp=F[,tensor=T]', or '' for config.mesh")
        if self.mesh:
            try:
                sharding.parse_mesh_sizes(self.mesh, key=f"config key {name}.mesh")
            except ValueError as error:
                raise ConfigError(str(error)) from None
        self.check_kind(name)
        self.check_start_anchor(name)
        self.check_pair_terms(name)

    def check_kind(self, name: str) -> None:
        """A cached stage trains the heads alone; an image stage trains the tower alone, and only it does."""
        if self.kind == "cached_pooled" and self.trainable != "heads":
            raise ConfigError(f"config key {name}.kind='cached_pooled' needs {name}.trainable='heads' (the encoder "
                              f"frozen, so each text's pooled vector never changes); got {self.trainable!r}. Set "
                              f"{name}.kind='records' for this stage.")
        if (self.kind == "images") != (self.trainable == "vision"):
            raise ConfigError(f"config keys {name}.kind={self.kind!r} and {name}.trainable={self.trainable!r}: an "
                              "image stage (kind='images') trains the vision tower (trainable='vision'), and only it "
                              "does; set both or neither")


    def check_start_anchor(self, name: str) -> None:
        """fc1_init and start_interpolation take their values, and only a cached heads stage sets them: its heads are
        fitted on the cached pooled vectors of a frozen encoder (stages/start_anchor.py)."""
        alpha = self.start_interpolation
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha)
                                                                                   and 0 <= alpha <= 1):
            raise ConfigError(f"config key {name}.start_interpolation={alpha!r}: the encoder becomes (1 − α)·start + "
                              "α·trained, so α must be a number in [0, 1] (1: the trained encoder unchanged, 0: the "
                              f"start's); e.g. --config.{name}.start_interpolation=0.5")
        if self.fc1_init not in FC1_INITS:
            raise ConfigError(f"config key {name}.fc1_init={self.fc1_init!r}: use '' (a random FC1) or 'start' "
                              "(identity onto the start teacher's block of the target, least squares on the rest)")
        if not isinstance(self.interpolation_start, str):
            raise ConfigError(f"config key {name}.interpolation_start={self.interpolation_start!r}: a model folder "
                              "(or '' for model.init_from)")
        for key, active in (("start_interpolation", alpha != 1), ("fc1_init", bool(self.fc1_init))):
            if active and self.kind != "cached_pooled":
                raise ConfigError(f"config key {name}.{key} needs {name}.kind='cached_pooled' (and trainable='heads': "
                                  "the heads are fitted on the cached pooled vectors of a frozen encoder); got "
                                  f"kind={self.kind!r}")


    def check_pair_terms(self, name: str) -> None:
        """A pair stage's weights are numbers ≥ 0 and its temperature > 0; another kind leaves them at their
        defaults (its batches carry no pairs, so they would do nothing)."""
        for key in ("contrastive_weight", "contrastive_kl_weight"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                                       and value >= 0):
                raise ConfigError(f"config key {name}.{key}={value!r}: a loss weight, a finite number ≥ 0; e.g. "
                                  f"--config.{name}.{key}=1.0")
        try:
            contrastive.check_temperature(self.contrastive_temperature, f"{name}.contrastive_temperature")
        except ValueError as error:
            raise ConfigError(str(error)) from None
        defaults = StageConfig(self.trainable, self.learning_rate, self.num_steps)
        for key in ("contrastive_weight", "contrastive_temperature", "contrastive_kl_weight"):
            if self.kind != "pairs" and getattr(self, key) != getattr(defaults, key):
                raise ConfigError(f"config key {name}.{key} is set, but stage {name} is kind={self.kind!r}: only a "
                                  f"pair stage (kind='pairs') has pair terms; set {name}.kind='pairs' or drop the key")
        if self.kind == "pairs" and self.trainable == "vision":
            raise ConfigError(f"config key {name}.trainable='vision': a pair stage (kind='pairs') trains the text "
                              "path on WordNet pairs; use heads, heads+last_layers or all")


def stage(trainable: str, learning_rate: float, num_steps: int, **options: Any) -> ml_collections.ConfigDict:
    """A stage section for a config (`config.stage1 = stage('heads', 1e-4, 4000)`): every StageConfig key with its
    default, so --config.<stage>.<key>=VALUE overrides any of them. An unknown option is a TypeError here."""
    values = dataclasses.asdict(StageConfig(trainable, float(learning_rate), int(num_steps), **options))
    if values["head_learning_rate"] is None:
        values["head_learning_rate"] = config_dict.placeholder(float)
    else:
        values["head_learning_rate"] = float(values["head_learning_rate"])
    for key in ("start_interpolation", "contrastive_weight", "contrastive_temperature", "contrastive_kl_weight"):
        values[key] = float(values[key])  # so a command line's 0.5 fits it
    return ml_collections.ConfigDict(values)


def stage_config(config: ml_collections.ConfigDict, name: str) -> StageConfig:
    """The checked StageConfig of `config[name]` (a section of stage_order); errors name the key."""
    if name not in config:
        raise ConfigError(f"config key stage_order names {name!r}, but the config has no such section; sections: "
                          f"{sorted(key for key in config.keys() if key.startswith('stage') and key != 'stage_order')}")
    values = config[name].to_dict() if hasattr(config[name], "to_dict") else dict(config[name])
    fields = [field.name for field in dataclasses.fields(StageConfig)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"config key {name}.{unknown[0]}: a stage has no such key; its keys are {fields} "
                          "(embed_jax/train/config.py, StageConfig)")
    missing = [field for field in ("trainable", "learning_rate", "num_steps") if field not in values]
    if missing:
        raise ConfigError(f"config key {name}.{missing[0]} is missing: every stage names trainable, learning_rate "
                          f"and num_steps; build it with embed_jax.train.config.stage(...)")
    typed = StageConfig(**values)
    typed.check(name)
    return typed


def positive_int(value: Any, key: str, why: str, example: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config key {key}={value!r}: {why}, so it must be a whole number ≥ 1; e.g. "
                          f"--config.{key}={example}")


# ---------------------------------------------------------------------------------------------------- the schema



def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.init_from = ""
    config.model.teacher_dim = 0
    config.model.reduction_dims = ()
    config.model.pooling = "mean"  # docs/method.md §1: masked mean
    config.model.dtype = "float32"
    config.model.param_dtype = "float32"
    config.model.text_options = ml_collections.ConfigDict()
    # Stage 4 (docs/method.md §4; a stage of kind "images"): embed_jax/train/stages/vision.py.
    config.model.text_student = ""
    config.model.vision = ml_collections.ConfigDict(
        {"tower": ml_collections.ConfigDict(), "folder": "", "pool_mode": "adaptive_average", "num_tokens": 300})

    config.data = ml_collections.ConfigDict()
    config.data.records_dir = ""
    config.data.tokenizer = ""
    config.data.image_records_dir = ""  # image–caption records for image stages
    config.data.eval_records_dir = ""  # held-out records for the periodic evaluation (train.eval_every)
    config.data.max_length = 512  # docs/method.md §4
    config.data.length_buckets = (64, 128, 256, 512)
    config.data.global_batch_size = 128  # docs/method.md §4
    # 1: uniformly random batches (the paper). W > 1 sorts each W consecutive batches' records by length before
    # batching: 53% instead of 88% padded tokens on the built-in corpus (docs/data.md), batches no longer uniform.
    config.data.length_grouping_window = 1
    # What such a window is regrouped by: "length" (less padding), or "teacher": each batch a text and its nearest
    # teacher neighbours, so the in-batch losses compare close pairs (embed_jax/data/neighbour_batches.py).
    config.data.group_by = "length"
    # "": every teacher weighs the same (the paper, docs/method.md §2). "NAME=W,...", by the records' teacher names:
    # the target's cosine becomes Σ w_i cos_i (embed_jax/data/teacher_weights.py; the choice: docs/training.md).
    config.data.teacher_weights = ""

    config.loss = ml_collections.ConfigDict()
    config.loss.cosine_weight = 10.0  # docs/method.md §3.4
    config.loss.similarity_weight = 200.0
    config.loss.relative_similarity_weight = 20.0
    config.loss.margin = 0.015  # docs/method.md §3.3
    config.loss.reduction_target = "teacher"
    # (): the paper's separate reduction heads only. (128, 256): FC1's first 128 and 256 dims also learn the
    # reduction heads' terms in every stage, so truncating FC1's vector is an embedding (embed_jax/losses.py).
    config.loss.matryoshka_dims = ()
    # A listwise ranking term on FC1 beside the paper's three (embed_jax/ranking.py); 0: the paper's losses only.
    config.loss.ranking_weight = 0.0
    config.loss.ranking_temperature = 0.05

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.weight_decay = 0.01  # public code (docs/method.md §4), not on biases and norms
    config.optimizer.warmup_fraction = 0.05  # public code: 5% warm-up, then cosine
    config.optimizer.clip_norm = 1.0
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999

    config.mesh = ml_collections.ConfigDict()
    config.mesh.data = -1
    config.mesh.fsdp = 1
    config.mesh.tensor = 1

    config.train = ml_collections.ConfigDict()
    config.train.log_every = 50
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2
    config.train.eval_every = 0  # steps between evaluations on data.eval_records_dir (0: off); must be a multiple
    config.train.eval_batches = 8  # of log_every, since evaluation rides on the logging step

    config.stage_order = ("stage1", "stage2", "stage3")
    # docs/method.md §4: learning rates and steps of the paper.
    # (stage1.kind='cached_pooled': pool every record once with the frozen encoder, then train FC1 on the cached
    # vectors; exact for a heads-only stage, milliseconds a step instead of an encoder pass: train/stages/cached.py.)
    config.stage1 = stage("heads", 1e-4, 4000)
    config.stage2 = stage("heads+last_layers", 8e-5, 7000, last_layers=3)
    config.stage3 = stage("all", 7e-5, 2200, reduction_heads=True)
    return config


def shrink_for_smoke(config: ml_collections.ConfigDict) -> None:
    """big_vision's `:runlocal` idea, named `:smoke` in every config here: the same config, a few steps per stage,
    for a quick end-to-end check."""
    config.data.global_batch_size = 8
    config.data.max_length = 32
    config.data.length_buckets = (16, 32)
    for stage in config.stage_order:
        config[stage].num_steps = 3
    config.train.log_every = 1
    config.train.checkpoint_every = 2
    config.data.eval_records_dir = ""  # a smoke run needs only its training records
