r"""Stage 4 on this CPU (docs/method.md §4): a small SigLIP-shaped tower, from scratch, learns to put scikit-learn's
handwritten digits where their captions' vectors are, through the frozen text path of a trained MiniLM student.

    # 1. caption vectors from the text student's own text path (self-distillation, as in the paper):
    python -m embed_jax.teachers.caption_export --text_student=runs/default/train/stage3_pairs \
        --output_dir=runs/vision/records/train --split=train
    # 2. stage 4:
    python -m embed_jax.main --config=configs/vision.py --workdir=runs/vision/train
    # 3. zero-shot digit classification and image→caption retrieval on the held-out images:
    python -m embed_jax.eval.zero_shot --workdir=runs/vision/train

The text student: all-MiniLM-L6-v2 with the heads the embedded default trained (configs/distill.py → stage3:
FC1 1152-d, reduction heads 256-d and 128-d), i.e. the real text path, heads and all, frozen. The tower is tiny
because digits are 8×8 and this is a 2-core CPU: 32×32 input (8×8 digits upsampled ×4, bicubic as SigLIP's processor),
patch 8 → 16 patches, 3 layers of width 192; the pool is the learned linear mode (token average 16 → 8, then
192 → 384), because the parameter-free adaptive average would have to stretch 192 channels to MiniLM's 384.
A real SigLIP loads with --config.model.vision.folder=PATH --config.model.vision.tower=None (same code).
Measured (docs/vision_student.md): see the table there. `configs/vision.py:smoke` runs a few steps.
"""
import ml_collections

from embed_jax.config_arg import parse_arg
from embed_jax.train import config as train_config

DIGIT_TOWER = {
    "model_type": "siglip_vision_model",
    "image_size": 32,  # 8×8 digits ×4
    "patch_size": 8,  # 4×4 = 16 patches
    "hidden_size": 192,
    "intermediate_size": 768,
    "num_hidden_layers": 3,
    "num_attention_heads": 3,
    "vision_use_head": False,  # the student pools patch tokens (docs/method.md §1); a MAP head would get no gradient
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    words = parse_arg(arg, config_file="configs/vision.py", words=("smoke",))
    config = train_config.base_config()
    config.model.init_from = "asset:all-MiniLM-L6-v2"  # the tokenizer, and the text encoder's architecture
    config.model.text_student = "runs/default/train/stage3_pairs"
    config.model.teacher_dim = 1152
    config.model.reduction_dims = (256, 128)
    config.model.vision.tower = ml_collections.ConfigDict(DIGIT_TOWER)
    config.model.vision.pool_mode = "linear"
    config.model.vision.num_tokens = 8
    config.data.image_records_dir = "runs/vision/records/train"
    config.data.global_batch_size = 32
    config.stage_order = ("stage4",)
    # docs/method.md §4: lr 1e-4 for 3500 steps from a pretrained SigLIP. From scratch (measured, held-out FC1 zero-shot
    # accuracy): 600 steps at 2e-3 → 12% (chance), at 5e-4 → 75%; 1800 steps at 5e-4 → 98.0% (docs/vision_student.md).
    config.stage4 = train_config.stage("vision", 5e-4, 1800, reduction_heads=True, kind="images")
    config.optimizer.warmup_fraction = 0.05
    config.train.log_every = 20
    config.train.checkpoint_every = 600
    if "smoke" in words:
        config.data.global_batch_size = 8
        config.stage4.num_steps = 3
        config.train.log_every = 1
        config.train.checkpoint_every = 2
    return config
