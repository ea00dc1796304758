r"""The run behind docs/RESULTS.md: all-MiniLM-L6-v2 + all-mpnet-base-v2 (1152-d) distilled into a MiniLM student.

    # teacher records (the first 100,000 built-in texts in their fixed order; teachers at their own windows, 256/384)
    python -m embed_jax.teachers.export --config=configs/teachers.py --config.corpus.max_texts=100000 \
        --config.teachers.minilm.max_seq_length=0 --config.teachers.mpnet.max_seq_length=0 \
        --config.output_dir=runs/results/records100k
    python -m embed_jax.teachers.export --config=configs/teachers.py:eval --config.teachers.minilm.max_seq_length=0 \
        --config.teachers.mpnet.max_seq_length=0 --config.output_dir=runs/results/eval_records
    python -m embed_jax.main --config=configs/results.py --workdir=runs/results/train100k
    python -m embed_jax.main --config=configs/results.py:small --workdir=runs/results/train100k_small

Stages 1 → 2 → 3 (docs/method.md §4) with FC1 (1152-d) and 384/256/128-d reduction heads from stage 3, batch 32,
length-grouped batches, validation loss every 100 steps. Stage 1 trains FC1 from cached pooled vectors
(stage1.cached_pooled: one encoder pass over the records, then thousands of steps in under two minutes). The validation
texts start at position 100,000 of the same order (configs/teachers.py:eval), so they follow the training texts without
overlap. `:small` is the size/quality trade: the same recipe for a student made of MiniLM's first 3 layers
(model.text_options.num_layers).
"""
import ml_collections

from embed_jax.train import config as train_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "small"):
        raise ValueError(f"configs/results.py:{arg} — the variants are: (none), 'small'.")
    config = train_config.base_config()
    config.model.init_from = "asset:all-MiniLM-L6-v2"
    config.model.teacher_dim = 1152  # 384 (MiniLM) + 768 (mpnet), docs/method.md §2
    config.model.reduction_dims = (384, 256, 128)
    if arg == "small":
        config.model.text_options = {"num_layers": 3}
    config.data.records_dir = "runs/results/records100k"
    config.data.eval_records_dir = "runs/results/eval_records"
    config.data.max_length = 128
    # Built-in texts average ~16 tokens: a 16-token bucket cuts the tokens a window-8 epoch pads to by 25% against
    # (32, 64, 128) (3.29M vs 4.40M over the 100,000 training texts, MiniLM's tokenizer; docs/RESULTS.md).
    config.data.length_buckets = (16, 32, 64, 128)
    # configs/distill.py's: 32 keeps a step near a second on 2 CPU cores, so the hour this CPU allows buys more steps.
    config.data.global_batch_size = 32
    config.data.length_grouping_window = 8  # configs/distill.py: ~2× fewer padded tokens on this CPU
    config.train.log_every = 25
    config.train.eval_every = 100
    config.train.eval_batches = 8  # all 256 validation records
    config.train.checkpoint_every = 100
    # Stage 1 from cached pooled vectors: 8,000 steps (2.6 epochs of 100k texts) took 1 min 45 s after a 10.6-minute
    # pooling pass (docs/RESULTS.md).
    # On 11,264 texts 3,000 steps at 1e-3 brought FC1's validation cosine loss to 0.137 (500 uncached steps: 0.187).
    config.stage1.cached_pooled = True
    config.stage1.num_steps, config.stage1.learning_rate = 8000, 1e-3
    # Stages 2–3 at configs/distill.py's rates (measured there: each stage lowers every validation loss term); FC1 is
    # trained already, so it moves at 3e-4 in stage 2; the new reduction heads need a head's rate in stage 3.
    # Steps: what about 35 minutes of this shared 2-core CPU allowed (stage 2: 17 min 2 s, stage 3: 18 min 3 s;
    # docs/RESULTS.md).
    config.stage2.num_steps, config.stage2.learning_rate, config.stage2.head_learning_rate = 800, 5e-5, 3e-4
    config.stage3.num_steps, config.stage3.learning_rate, config.stage3.head_learning_rate = 600, 3e-5, 1e-3
    return config
