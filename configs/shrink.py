r"""Self-distillation for dimension reduction (SPEC §4, "proposed"): shrink any embedding model's vectors with
unlabeled text and the model alone. The encoder stays frozen; independent reduction heads learn to keep the
similarity structure (similarity + relative similarity) of the model's own pooled vectors.

    python -m embed_jax.main --config=configs/shrink.py --workdir=runs/shrink \
        --config.data.records_dir=runs/default/records        # any records: only their texts are used

Default: all-MiniLM-L6-v2 (384-d) → 128-d and 64-d heads. The records' teacher vectors are ignored. Any BERT /
XLM-R / GPT-2 / Qwen2 folder works (--config.model.init_from=...); all-mpnet-base-v2 needs an MPNet encoder, which
embed_jax does not have yet (its model_type is refused with the supported list).
"""
import ml_collections

from embed_jax.train import config as train_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = train_config.base_config()
    config.model.init_from = "asset:all-MiniLM-L6-v2"
    config.model.teacher_dim = 0  # no FC1: the target is the model's own pooled vector
    config.model.reduction_dims = (128, 64)
    config.loss.reduction_target = "pooled"
    config.data.records_dir = "runs/default/records"
    config.data.max_length = 128
    config.data.length_buckets = (32, 64, 128)
    config.data.global_batch_size = 64
    config.stage_order = ("shrink",)
    # Heads only: a frozen encoder gives fixed targets, so a higher learning rate than the paper's is safe.
    config.shrink = ml_collections.ConfigDict(
        {"trainable": "heads", "learning_rate": 1e-3, "num_steps": 300, "reduction_heads": True})
    config.train.log_every = 10
    config.train.checkpoint_every = 100
    if arg == "smoke":
        train_config.shrink_for_smoke(config)
    return config
