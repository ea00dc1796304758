"""What many test packages build the same way: the shipped configs, tiny random BERTs saved as real Hugging Face
folders, the export config of real teacher records, and stage folders in the training loop's layout.

Test modules `import kit` (pyproject.toml's pytest `pythonpath` puts tests/ on the path; conftest files are not
importable under --import-mode=importlib). tests/conftest.py turns the expensive builds into session fixtures
(`tiny_bert`, `teacher_records`, `pair_records`, `minilm_tokenizer_files`, `tiny_training_state`); the functions here are for the
shapes a test needs of its own. Numerical comparisons live in tests/parity.py. jax and torch are imported inside the
functions that use them: every test process imports this module through tests/conftest.py, the torch-free and
jax-free tests included.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from embed_jax.assets import minilm_path
from embed_jax.convert.tokenizer_files import TOKENIZER_FILES
from embed_jax.data import corpora

REPO = Path(__file__).resolve().parents[1]
# The tiny BERTs read all-MiniLM-L6-v2's vocabulary, so any real text tokenises for them and for MiniLM alike.
MINILM_VOCAB_SIZE = 30522
TINY_BERT_HIDDEN = 32
TINY_BERT_POSITIONS = 128  # `tiny_bert`'s position table
# `teacher_records`: WordNet definitions with their all-MiniLM-L6-v2 vectors.
TEACHER_RECORDS_COUNT = 64
MINILM_DIM = 384


def load_config_file(name: str, arg: str | None = None):
    """configs/NAME.py (not a package) loaded from its path, as --config=configs/NAME.py[:arg] does."""
    spec = importlib.util.spec_from_file_location(f"config_{name}", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


def load_script(name: str):
    """scripts/NAME.py (not a package) loaded from its path as a module, for tests of its functions and `main`."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_tokenizer_files(source: Path, folder: Path) -> Path:
    """The tokenizer files of `source` (those embed_jax's exporter copies), byte for byte, into `folder`."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copy(Path(source) / name, Path(folder) / name)
    return Path(folder)


def save_tiny_bert(folder: Path, *, seed: int = 0, num_layers: int = 2, max_positions: int = TINY_BERT_POSITIONS,
                   pooler: bool = True, edit: Callable | None = None) -> Path:
    """A random BERT (hidden 32, 4 heads, MLP 64, with its pooler unless `pooler=False`) saved with save_pretrained, with MiniLM's tokenizer files.
    `edit(model)` changes the weights (under torch.no_grad) before saving."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(hidden_size=TINY_BERT_HIDDEN, num_hidden_layers=num_layers, num_attention_heads=4,
                        intermediate_size=64, vocab_size=MINILM_VOCAB_SIZE, max_position_embeddings=max_positions)
    model = BertModel(config, add_pooling_layer=pooler).eval()
    if edit is not None:
        with torch.no_grad():
            edit(model)
    model.save_pretrained(folder)
    return copy_tokenizer_files(minilm_path(), folder)


def tiny_training_state(folder: Path, *, trainable: str = "all", teacher_dim: int = 24,
                        reduction_dims: tuple[int, ...] = (8,), learning_rate: float = 1e-3, num_steps: int = 10,
                        mesh=None):
    """A stage's training state as the training loop builds it (embed_jax/train/stages/batch.py): the Student of a
    tiny BERT folder with FC1 (`teacher_dim`) and `reduction_dims` heads, split as `trainable` says, AdamW without
    warm-up, every sharding on `mesh` (default: one device), and the jitted train step of the records target.
    Returns the stage's BatchStep (`.state`: TrainState, `.train_step`, `.batch_sharding`)."""
    import jax
    from flax import nnx

    from embed_jax import losses
    from embed_jax.models.student import Student
    from embed_jax.train import sharding
    from embed_jax.train.config import StageConfig
    from embed_jax.train.stages.batch import make_batch_step

    heads = {"teacher_dim": teacher_dim, "reduction_dims": list(reduction_dims)}
    student = Student.from_pretrained(folder, heads=heads, rngs=nnx.Rngs(0))
    mesh = mesh or sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    return make_batch_step(student, StageConfig(trainable, learning_rate, num_steps), {"warmup_fraction": 0.0},
                           losses.LossConfig(main_head=f"dense_{teacher_dim}"), mesh, target="records")


def minilm_export_config(output_dir: Path, *, num_texts: int = TEACHER_RECORDS_COUNT, shard_size: int = 32):
    """configs/teachers.py:smoke with all-MiniLM-L6-v2 alone on the first `num_texts` WordNet definitions, float32."""
    config = load_config_file("teachers", "smoke")
    config.output_dir = str(output_dir)
    config.corpus.builtin = "wordnet"
    config.corpus.order = "text"  # the order the tests' records were written against (synsets apart)
    config.corpus.max_texts = num_texts
    del config.teachers["mpnet"]
    config.teacher_order = "minilm"
    config.storage_dtype = "float32"
    config.shard_size = shard_size
    config.progress_every_s = 0.0
    return config


def minilm_and_tiny_export_config(output_dir: Path, tiny_bert: Path, *, num_texts: int = TEACHER_RECORDS_COUNT,
                                  shard_size: int = 32):
    """`minilm_export_config` with a second teacher, the tiny BERT folder `tiny_bert` (mean pooling, 32-d):
    two-teacher records (384 + 32 = 416-d) at the cost of one real teacher."""
    config = minilm_export_config(output_dir, num_texts=num_texts, shard_size=shard_size)
    config.teachers.tiny = dict(path=str(tiny_bert), pooling="mean", prompt="", max_seq_length=0)
    config.teacher_order = "minilm,tiny"
    return config


def perturb(student, seed: int, scale: float = 0.01):
    """Moves every parameter of `student` a little, as training would: an export that wrote the source model's
    weights instead of the student's would then fail the parity tests."""
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    rng = np.random.default_rng(seed)
    for _, variable in nnx.to_flat_state(nnx.state(student, nnx.Param)):
        value = np.asarray(variable.get_value())
        variable.set_value(jnp.asarray(value + scale * rng.standard_normal(value.shape).astype(value.dtype)))
    return student


def write_stage(workdir: Path, stage: str, student, *, init_from: str, records_fingerprint: str | None,
                teachers=("minilm",), step: int = 3) -> Path:
    """A stage folder as the training loop leaves it (embed_jax/train/workdir.py's layout): student_config.json, an
    Orbax checkpoint through embed_jax.train.checkpoint with the run identity, metrics.jsonl."""
    import json

    from flax import nnx

    from embed_jax.train import checkpoint
    from embed_jax.train.workdir import PARAMS_ITEM, STUDENT_CONFIG_FILE

    stage_dir = Path(workdir) / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / STUDENT_CONFIG_FILE).write_text(json.dumps(student.config, indent=1, default=str))
    identity = {"stage": stage, "init_from": init_from, "records_fingerprint": records_fingerprint,
                "teachers": list(teachers), "seed": 0}
    manager = checkpoint.CheckpointManager(stage_dir / "checkpoints", save_every=1, keep=1, identity=identity,
                                           shape_config={})
    manager.save(step, {PARAMS_ITEM: nnx.state(student, nnx.Param)}, force=True)
    manager.close()
    (stage_dir / "metrics.jsonl").write_text(json.dumps({"step": step, "loss": 1.25}) + "\n")
    return stage_dir


def export_tiny_family(root: Path, model_class, config, *, text_options: dict, heads: dict, seed: int,
                       tokenizer: Path, records_fingerprint: str | None, **export_options):
    """(student, init folder, exported folder) under `root`: a random Hugging Face model of one family (`model_class`
    built from `config`, torch seed 0) saved as root/init, imported as a student with `heads` and moved off its
    weights (`perturb(seed)`), written as stage 3 of root/train and exported by the real exporter into root/out
    with `tokenizer` (`export_options`: records_dirs, skip_records)."""
    import torch
    from flax import nnx

    from embed_jax.convert import st_export
    from embed_jax.models.student import Student

    root = Path(root)
    torch.manual_seed(0)
    model_class(config).eval().save_pretrained(root / "init")
    student = perturb(Student.from_pretrained(root / "init", heads=heads, text_options=text_options,
                                              rngs=nnx.Rngs(0)), seed=seed)
    write_stage(root / "train", "stage3", student, init_from=str(root / "init"),
                records_fingerprint=records_fingerprint)
    st_export.export(root / "train", root / "out", tokenizer=str(tokenizer), **export_options)
    return student, root / "init", root / "out"


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A real tmpfs at `folder` (e.g. options "size=6M" for a disk that fills up, "ro" for a read-only file system),
    unmounted afterwards; the test is skipped where mounting is not allowed (tests run as root here)."""
    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


PAIR_TRAINING_SYNSETS = 10  # training-side synsets with usage examples in `export_wordnet_pair_records`
PAIR_VALIDATION_SYNSETS = 2


def wordnet_training_side(synsets, validation: bool):
    """Synsets with usage examples outside the hold-out, in (validation=True) or outside the validation split."""
    return [synset for synset in synsets if synset.examples and not corpora.is_held_out_synset(synset.key)
            and corpora.is_validation_synset(synset.key) == validation]


def export_wordnet_pair_records(folder: Path, second_teacher: Path | None = None) -> Path:
    """Real all-MiniLM-L6-v2 records of real WordNet texts in folder/records, ids as the built-in corpus writes them:
    10 training-side synsets with their usage examples (the first with two or more), 2 of the validation split, a
    definition whose synset has no example among the records, and a passage. `second_teacher`: a tiny model folder
    (mean pooling) as a second teacher named 'tiny', as `minilm_and_tiny_export_config`."""
    from embed_jax.teachers import export  # torch at the edge: the exporter

    synsets = corpora.read_wordnet()
    training = wordnet_training_side(synsets, validation=False)
    several = next(synset for synset in training if len(synset.examples) >= 2)
    chosen = [several] + [synset for synset in training if synset is not several][:PAIR_TRAINING_SYNSETS - 1]
    rows = []
    for synset in chosen + wordnet_training_side(synsets, validation=True)[:PAIR_VALIDATION_SYNSETS]:
        rows.append({"id": f"wordnet:{synset.key}:definition", "text": synset.definition})
        rows += [{"id": f"wordnet:{synset.key}:example:{index}", "text": example}
                 for index, example in enumerate(synset.examples)]
    lonely = next(synset for synset in synsets if not synset.examples and not corpora.is_held_out_synset(synset.key))
    rows.append({"id": f"wordnet:{lonely.key}:definition", "text": lonely.definition})
    rows.append({"id": "wiki:1:0", "text": "A passage that is neither a definition nor a usage example."})
    (folder / "texts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = (minilm_export_config(folder / "records", num_texts=len(rows), shard_size=8) if second_teacher is None
              else minilm_and_tiny_export_config(folder / "records", second_teacher, num_texts=len(rows), shard_size=8))
    config.corpus.kind, config.corpus.paths, config.corpus.id_field = "jsonl", str(folder / "texts.jsonl"), "id"
    export.run_export(config)
    return folder / "records"
