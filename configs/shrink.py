r"""Self-distillation for dimension reduction (docs/method.md §4, "proposed"): shrink any embedding model's vectors with
unlabeled text and the model alone. The encoder stays frozen; independent reduction heads learn to keep the
similarity structure (similarity + relative similarity) of the model's own pooled vectors.

    python -m embed_jax.main --config=configs/shrink.py --workdir=runs/shrink \
        --config.data.records_dir=runs/default/records        # any records: only their texts are used
    python -m embed_jax.main --config=configs/shrink.py:minilm --workdir=runs/shrink_minilm   # the small model
    python -m embed_jax.main --config=configs/shrink.py:minilm,smoke --workdir=/tmp/shrink     # a few steps

Default: all-mpnet-base-v2 (768-d, 109.5M parameters) → 128-d and 64-d heads, the reduction
docs/shrink.md measures (there from cached vectors, the same result: the learnt heads keep 100.2% / 93.5% of mpnet's
suite mean, PCA 99.3% / 92.5%).
`minilm`: all-MiniLM-L6-v2 (384-d, 22.7M) → 128-d and 64-d, ~5× cheaper per step. `smoke`: a few steps. The records'
teacher vectors are ignored.

Cost: every step runs the frozen encoder forward on a fresh batch. all-mpnet-base-v2 at batch 32 measured ~30 s/step
on this 2-core machine under load average 7–10 from other jobs (6 steps in 3 min 52 s, compiling 3 length buckets
included), so the default 300 steps take ~1–2.5 hours here; MiniLM at batch 64 is the quick alternative. Any BERT / XLM-R / MPNet / GPT-2 / Qwen2 folder works (--config.model.init_from=...).
"""
import ml_collections

from embed_jax.config_arg import parse_arg
from embed_jax.train import config as train_config

# arg word → the model it shrinks (the first is the default).
MODELS = {"mpnet": "asset:all-mpnet-base-v2", "minilm": "asset:all-MiniLM-L6-v2"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    words = parse_arg(arg, config_file="configs/shrink.py", words=(*MODELS, "smoke"), one_of=[tuple(MODELS)])
    model = next((word for word in MODELS if word in words), next(iter(MODELS)))
    smoke = "smoke" in words
    config = train_config.base_config()
    config.model.init_from = MODELS[model]
    config.model.teacher_dim = 0  # no FC1: the target is the model's own pooled vector
    config.model.reduction_dims = (128, 64)
    config.loss.reduction_target = "pooled"
    config.data.records_dir = "runs/default/records"
    config.data.max_length = 128
    config.data.length_buckets = (32, 64, 128)
    # MPNet's forward costs ~5× MiniLM's per token: 32 (distill.py's batch, 496 in-batch pairs) halves its step.
    config.data.global_batch_size = 32 if model == "mpnet" else 64
    config.stage_order = ("shrink",)
    # Heads only: a frozen encoder gives fixed targets, so a higher learning rate than the paper's is safe.
    config.shrink = train_config.stage("heads", 1e-3, 300, reduction_heads=True)
    config.train.log_every = 10
    config.train.checkpoint_every = 100
    if smoke:
        train_config.shrink_for_smoke(config)
    return config
