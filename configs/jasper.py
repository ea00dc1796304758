r"""The paper's recipe (docs/method.md §4): a stella_en_1.5B_v5 student (Qwen2, bidirectional) distilled from
NV-Embed-v2 (4096-d) + stella's 8192-d head = a 12288-d target, global batch 128, length 512, bf16 compute,
stages 1 → 2 → 3.

Export the teacher records first (PyTorch, on GPUs: configs/jasper_teachers.py) and copy them to a bucket; mount
the bucket on every worker of the TPU slice (records are read as local files: a gs:// records_dir is refused), then
train there (launch/, docs/launch.md). The workdir may be gs:// (Orbax writes checkpoints there directly):

    python -m launch.tpu setup --name=jasper --zone=ZONE --gcsfuse-bucket=BUCKET     # mounts /mnt/gcs/BUCKET
    python -m launch.tpu run --name=jasper --zone=ZONE -- \
      python -m embed_jax.main --config=configs/jasper.py --workdir=gs://BUCKET/jasper \
        --config.model.init_from=/path/to/stella_en_1.5B_v5 --config.data.records_dir=/mnt/gcs/BUCKET/records/jasper

One stage at a time (e.g. to inspect stage 1 before stage 2): add --config.stage_order="('stage1',)", then rerun
with "('stage1','stage2')" — finished stages are resumed at their end, not repeated.
`configs/jasper.py:smoke` keeps every shape logic but shrinks steps and batch for a smoke run on one host.

Expected (paper, MTEB English 56): 71.54 average, between NV-Embed-v2 (72.31) and stella (71.19).
"""
import ml_collections

from embed_jax.config_arg import parse_arg
from embed_jax.train import config as train_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    words = parse_arg(arg, config_file="configs/jasper.py", words=("smoke",))
    config = train_config.base_config()
    # A local copy of stella_en_1.5B_v5 (its Qwen2 folder; pass its path). The plan (python -m embed_jax.plan) reads
    # the shipped shape of that name when the folder is not here.
    config.model.init_from = "stella_en_1.5B_v5"
    config.model.teacher_dim = 12288  # 4096 (NV-Embed-v2) + 8192 (stella's head), docs/method.md §2
    config.model.reduction_dims = (1024, 512, 256)  # FC2–FC4; Jasper serves 12288/1024/512/256
    config.model.pooling = "mean"
    config.model.dtype = "bfloat16"  # docs/method.md §4; losses stay fp32 (docs/method.md §3 numerics)
    config.model.param_dtype = "float32"
    # Stella runs Qwen2 bidirectionally; remat trades ~30% more compute for activations that fit at length 512.
    # Layers stay unscanned: stage 2 unfreezes single layers, which a stacked (scanned) array cannot do.
    config.model.text_options = ml_collections.ConfigDict({"causal": False, "remat": True, "scan": False})
    config.data.max_length = 512
    config.data.length_buckets = (128, 256, 512)
    config.data.global_batch_size = 128  # docs/method.md §4 (global: the losses see all 128, docs/method.md §3)
    # 1.5B params: fp32 weights + Adam states are ~18 GB; FSDP over the slice splits them.
    config.mesh.data = 1
    config.mesh.fsdp = -1
    config.mesh.tensor = 1
    config.train.log_every = 50
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 3
    # docs/method.md §4 table: learning rates and steps of the paper.
    config.stage1.learning_rate, config.stage1.num_steps = 1e-4, 4000
    config.stage2.learning_rate, config.stage2.num_steps = 8e-5, 7000
    config.stage3.learning_rate, config.stage3.num_steps = 7e-5, 2200
    # stage{1,2}.replicate_frozen=True (the frozen encoder whole on every chip) is faster on some slices and slower on
    # others (v5p-128 stage 1: 37% → 53% MFU est.; v6e-16 stage 1: 41% → 38%): a per-slice choice, docs/launch.md
    # "Frozen parameters, replicated".
    if "smoke" in words:
        train_config.shrink_for_smoke(config)
    return config
