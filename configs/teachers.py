r"""Teacher export: texts → teacher vectors → ArrayRecord shards + manifest.json (docs/data.md).

The embedded default runs the two real teachers that install without a hub, all-MiniLM-L6-v2 (384-d) and
all-mpnet-base-v2 (768-d), concatenated into a 1152-d target (docs/method.md §2), on a mixed sample of the built-in
corpora (Wikipedia passages, ABC news, WordNet definitions and examples; evaluation hold-out excluded):

    python -m embed_jax.teachers.export --config=configs/teachers.py

exports 3,000 texts, each teacher reading at most 128 tokens. Not timed on a free machine; the earlier default
(4,000 texts at the teachers' own windows) took 7 min 25 s at load 4–5, the pair running ~12 texts/s on one
thread with mpnet seven times MiniLM's cost (docs/data.md). Variants:

    --config=configs/teachers.py:full     all 156,707 built-in training texts (about 3.5 hours of one core)
    --config=configs/teachers.py:smoke    300 texts, a one-minute check of the whole path
    --config=configs/teachers.py:eval     256 validation texts from far down the same order (texts 100,000–100,255),
                                          disjoint from any export of fewer than 100,000 texts: data.eval_records_dir

Any field is overridable, e.g.

    --config.corpus.kind=jsonl --config.corpus.paths='data/*.jsonl' --config.corpus.text_field=body \
    --config.output_dir=workdir/my_records --config.storage_dtype=float32 \
    --config.teachers.minilm.prompt='query: ' --config.teacher_order=mpnet,minilm

A teacher is a sentence-transformers folder (pooling 'auto': the folder's own pooling) or a Hugging Face folder
with pooling 'mean' or 'cls'. `asset:<name>` paths resolve to the bundled models (embed_jax/assets.py).
Killed at any point, the same command resumes and ends with exactly the records an uninterrupted run writes.

Many workers on one folder (docs/data.md, "Many workers"): the same command under torchrun, or once per worker with
--config.worker_index=K --config.num_workers=N; the records are byte-identical to one worker's:

    torchrun --standalone --nproc_per_node=8 -m embed_jax.teachers.export --config=configs/jasper_teachers.py

Plan first: --config.dry_run=True prints the texts, target dim, bytes on disk, measured rate and ETA; writes nothing.
"""
import ml_collections
from ml_collections import config_dict

from embed_jax.config_arg import parse_arg

# Corpus sizes: the default is the largest a few minutes allow on this CPU (docs/data.md, "Measured").
_SIZES = {"": 3000, "smoke": 300, "full": None, "eval": 256}
# Where the validation slice starts in the hash order (sources.BuiltinCorpus): beyond every export but :full.
_EVAL_SKIP = 100_000


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    variants = tuple(key for key in _SIZES if key)
    arg = ",".join(sorted(parse_arg(arg, config_file="configs/teachers.py", words=variants, one_of=[variants])))
    config = ml_collections.ConfigDict()
    config.output_dir = "workdir/teacher_records"

    config.corpus = ml_collections.ConfigDict()
    config.corpus.kind = "builtin"  # builtin | text | jsonl | parquet | tfds
    config.corpus.builtin = "all"  # wiki | lee_background | wordnet | all
    config.corpus.max_texts = config_dict.placeholder(int)  # None: the whole built-in corpus
    config.corpus.max_texts = _SIZES[arg]
    config.corpus.skip_texts = _EVAL_SKIP if arg == "eval" else 0  # builtin: start this far into the order
    # builtin: each WordNet synset's definition and usage examples adjacent in the order, so that the default's 3,000
    # texts hold 491 (example, definition) pairs for its pair stage instead of 14 (embed_jax/data/corpora.py).
    config.corpus.order = "synset"  # text | synset
    config.corpus.paths = ""  # text/jsonl/parquet: comma-separated files or globs
    config.corpus.text_field = "text"
    config.corpus.id_field = ""  # empty: ids from the position (file:line, file#row, name/split/index)
    config.corpus.tfds_name = ""
    config.corpus.tfds_split = "train"
    config.corpus.tfds_data_dir = ""
    config.corpus.on_decode_error = "error"  # error | replace (bad bytes → U+FFFD)

    config.teachers = ml_collections.ConfigDict()
    config.teachers.minilm = _teacher("asset:all-MiniLM-L6-v2")
    config.teachers.mpnet = _teacher("asset:all-mpnet-base-v2")
    # The order of the teachers' parts in the concatenated vector (ConfigDict sorts its keys, so it is explicit).
    config.teacher_order = "minilm,mpnet"

    # float16 halves the storage (docs/method.md §2: 8M × 12288 fp32 would be ~393 GB); its rounding (≤ 2^-11 relative)
    # is far below the losses' resolution. float32 when records must equal the teachers bit for bit.
    config.storage_dtype = "float16"
    # Records per shard: the unit of resumption (a kill loses at most one shard's work, ~90 s of one core here).
    config.shard_size = 1024
    # Length-bucketed batches (embed_jax/teachers/batching.py): padded-token budget and row cap per forward.
    config.max_tokens_per_batch = 4096
    config.max_batch_size = 256
    config.progress_every_s = 10.0
    # PyTorch CPU threads for the teachers; 0 keeps torch's default (one per core). On a machine shared with other
    # jobs, 1 can be several times faster: OpenMP threads spin-wait for busy cores (measured 5× per MiniLM forward
    # on this 2-core CPU under load).
    config.torch_threads = 0
    # Records folders whose finished shards this export may copy instead of encoding (embed_jax/teachers/reuse.py):
    # comma-separated. E.g. grow runs/a (4,000 texts) into runs/b (32,000) paying only for the new 28,000.
    config.reuse_from = ""
    # Many workers, one folder: -1 / 0 take torchrun's RANK / WORLD_SIZE (else one worker); or set both explicitly.
    config.worker_index = -1
    config.num_workers = 0
    # Print the plan (texts, target dim, bytes on disk, rate over a sample of dry_run_texts, ETA) and write nothing.
    config.dry_run = False
    config.dry_run_texts = 256
    return config


# Teachers read at most the student's max length (configs/distill.py data.max_length = 128): a vector of text the
# student never sees is noise to it, and the long wiki passages cost mpnet 3× their 128-token price at its 384.
_MAX_SEQ_LENGTH = 128


def _teacher(path: str, pooling: str = "auto", prompt: str = "", max_seq_length: int = _MAX_SEQ_LENGTH):
    return ml_collections.ConfigDict({
        "path": path, "pooling": pooling, "prompt": prompt, "max_seq_length": max_seq_length,
        # cpu | cuda | cuda:N | auto (cuda:LOCAL_RANK where torch sees a GPU, else cpu).
        "device": "cpu",
        # float32 on CPU: on this machine's CPU (AVX512-BF16, torch 2.13) bfloat16 was slower for both teachers,
        # as autocast (0.78× MiniLM, 0.40× mpnet) and as weights (0.82×, 0.49×), min cosine to fp32 0.99995 /
        # 0.99983 (docs/data.md, "Device and precision"). On a GPU, bfloat16 is the usual choice.
        "dtype": "float32",
        "autocast": False,  # True: float32 weights, forward under torch.autocast(dtype)
        "trust_remote_code": False,  # a folder with its own modelling code (config.json auto_map) needs True
        "prompt_name": "",  # a prompt named in the folder's config_sentence_transformers.json (instead of prompt)
        "dense_head": "",  # sentence-transformers: a Dense folder replacing the folder's own, e.g. 2_Dense_8192
        "append_eos": False,  # end each text with the tokenizer's EOS token (NV-Embed-v2's model card does)
    })
