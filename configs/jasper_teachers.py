r"""The paper's teacher export (docs/method.md §2, §4): NV-Embed-v2 (4096-d) + stella_en_1.5B_v5's 8192-d head = 12288-d
targets for configs/jasper.py, ~8M texts, float16 storage (~196 GB of vectors plus the texts).

One host with 8 GPUs (each worker on cuda:LOCAL_RANK), records on a disk all workers share:

    torchrun --standalone --nproc_per_node=8 -m embed_jax.teachers.export --config=configs/jasper_teachers.py \
      --config.teachers.nv_embed.path=/models/NV-Embed-v2 --config.teachers.stella.path=/models/stella_en_1.5B_v5 \
      --config.corpus.paths='/data/texts/*.jsonl' --config.output_dir=/mnt/disks/records/jasper

Several hosts (SLURM or any launcher): the same command on each, with --config.worker_index=K
--config.num_workers=N instead of torchrun (each process on its own GPU: --config.teachers.<name>.device=cuda:N),
and an output folder on a file system every host sees and that implements flock (NFS v4, Lustre, Filestore; not a
gcsfuse mount). Then copy the folder to a bucket for the TPU slice (docs/launch.md, "Records in a bucket"):

    gcloud storage cp -r /mnt/disks/records/jasper gs://BUCKET/records/jasper

Plan before spending: `configs/jasper_teachers.py:smoke` (or --config.dry_run=True) loads both teachers, encodes
a sample and prints texts, target dim, bytes on disk, rate and ETA at N workers, writing nothing.

Every teacher setting below cites where it comes from. The model cards were read as published on the Hugging Face
hub (nvidia/NV-Embed-v2; dunzhang/stella_en_1.5B_v5, now NovaSearch/stella_en_1.5B_v5); the model folders
themselves are not on this machine, so none of these settings was checked against their files here. Check a
folder's config_sentence_transformers.json, modules.json and tokenizer_config.json before a long run; the dry run
fails early (naming the key) on a prompt name, head folder or remote code that the folder does not have.
"""
import importlib.util
from pathlib import Path

import ml_collections

from embed_jax.config_arg import parse_arg


def _teachers_config():
    """configs/teachers.py's defaults and documentation (not a package, so loaded from its file)."""
    spec = importlib.util.spec_from_file_location("teachers_config", Path(__file__).with_name("teachers.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    words = parse_arg(arg, config_file="configs/jasper_teachers.py", words=("smoke",))
    teachers = _teachers_config()
    config = teachers.get_config()
    # A local or shared disk: records are local files (a gs:// folder is refused; copy the folder afterwards).
    config.output_dir = "/mnt/disks/records/jasper"
    config.corpus.kind = "jsonl"
    config.corpus.paths = "/data/texts/*.jsonl"
    config.corpus.text_field = "text"
    config.corpus.id_field = "id"

    config.teachers = ml_collections.ConfigDict()
    nv_embed = teachers._teacher("/path/to/NV-Embed-v2", max_seq_length=_MAX_SEQ_LENGTH)
    # Model card: `SentenceTransformer('nvidia/NV-Embed-v2', trust_remote_code=True)`; its latent-attention pooling
    # is the repository's own code, so the folder's sentence-transformers modules run it (pooling 'auto').
    nv_embed.trust_remote_code = True
    # Model card: passages get no instruction (`passage_prefix = ""`); queries get "Instruct: <task>\nQuery: ".
    # The distillation texts are passages. For a query corpus set e.g. --config.teachers.nv_embed.prompt=$'Instruct:
    # Given a question, retrieve passages that answer the question\nQuery: '.
    nv_embed.prompt = ""
    # Model card, sentence-transformers example: every input ends with `model.tokenizer.eos_token`. (The same
    # example sets `tokenizer.padding_side = "right"`; embed_jax uses the folder's tokenizer as shipped: check
    # that its tokenizer_config.json pads on the right.)
    nv_embed.append_eos = True
    # bfloat16 weights: 7.85B parameters, 15.7 GB instead of 31 GB in float32; docs/method.md §4 trains in bf16 as well.
    # Our choice for GPUs, not a model-card setting; the CPU figures in docs/data.md do not apply to a GPU.
    nv_embed.device, nv_embed.dtype = "auto", "bfloat16"

    stella = teachers._teacher("/path/to/stella_en_1.5B_v5", max_seq_length=_MAX_SEQ_LENGTH)
    # Model card: `SentenceTransformer("dunzhang/stella_en_1.5B_v5", trust_remote_code=True)`.
    stella.trust_remote_code = True
    # Model card: "The default dimension is 1024, if you need other dimensions, please ... replace `2_Dense_1024`
    # with another dimension, e.g. `2_Dense_256` or `2_Dense_8192`"; the paper's
    # teacher is the 8192-d head (docs/method.md §2).
    stella.dense_head = "2_Dense_8192"
    # Model card: two prompts, "s2p_query" and "s2s_query", "defined in config_sentence_transformers.json", for
    # queries; documents are encoded without one (`model.encode(docs)`). Passages here: none. For queries set
    # --config.teachers.stella.prompt_name=s2p_query.
    stella.prompt_name = ""
    stella.device, stella.dtype = "auto", "bfloat16"  # as for NV-Embed-v2: our GPU choice
    config.teachers.nv_embed = nv_embed
    config.teachers.stella = stella
    config.teacher_order = "nv_embed,stella"  # 4096 + 8192: configs/jasper.py model.teacher_dim = 12288

    config.storage_dtype = "float16"  # docs/method.md §2: fp32 would be ~393 GB for 8M × 12288; float16 half of it
    # 4,096 records per shard: ~100 MB files (12288 × 2 B + the text each), ~2,000 shards for 8M texts, and a kill
    # loses at most one shard per worker.
    config.shard_size = 4096
    # Padded tokens per forward: 64 texts at the 512-token window. Not measured (no GPU here): tune it with the dry
    # run, which prints the rate, on the GPUs you have.
    config.max_tokens_per_batch = 32768
    config.max_batch_size = 256
    config.torch_threads = 0
    if "smoke" in words:  # the plan on this host's GPU(s): reads the corpus, encodes 64 texts, writes nothing
        config.dry_run = True
        config.dry_run_texts = 64
    return config


# Teachers read what the student reads (configs/jasper.py data.max_length = 512); NV-Embed-v2's card allows 32768
# and stella's card encodes at max_length=512, but a vector of text the student never sees is noise to it.
_MAX_SEQ_LENGTH = 512
