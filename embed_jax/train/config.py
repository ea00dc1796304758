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
  loss.*                 weights 10/200/20 and margin 0.015 (docs/method.md §3), reduction_target teacher | main_head
  optimizer.*            AdamW, warm-up + cosine decay, clipping (embed_jax/train/optimizer.py)
  mesh.data/fsdp/tensor  device mesh sizes, -1 = the rest
  data.eval_records_dir, train.eval_every, train.eval_batches   held-out loss, logged as eval/<term>
  train.log_every, checkpoint_every, keep_checkpoints
  stage_order            which stage sections run, in order; each stage: trainable, learning_rate, num_steps, ...
                         (stage1.cached_pooled: FC1 from pooled vectors computed once, train/cached_stage.py)
"""
import ml_collections


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
    # Stage 4 (docs/method.md §4; a stage with trainable="vision"): embed_jax/train/vision_stage.py.
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
    config.stage1 = ml_collections.ConfigDict(
        {"trainable": "heads", "learning_rate": 1e-4, "num_steps": 4000, "reduction_heads": False,
         # True: pool every record once with the frozen encoder, then train FC1 on the cached vectors (exact for a
         # heads-only stage; milliseconds a step instead of an encoder pass: embed_jax/train/cached_stage.py).
         "cached_pooled": False,
         # "start" (cached stages only): FC1 starts as identity onto the start teacher's block of the target and least
         # squares on the rest, fitted on the cached rows (embed_jax/train/start_anchor.py); "": a random FC1.
         "fc1_init": ""})
    config.stage2 = ml_collections.ConfigDict(
        {"trainable": "heads+last_layers", "last_layers": 3, "learning_rate": 8e-5, "num_steps": 7000,
         "reduction_heads": False})
    config.stage3 = ml_collections.ConfigDict(
        {"trainable": "all", "learning_rate": 7e-5, "num_steps": 2200, "reduction_heads": True})
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
