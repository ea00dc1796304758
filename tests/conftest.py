"""Test-wide set-up, and the session fixtures that several test packages share (built by tests/kit.py).

Eight simulated CPU devices, so that sharded code can be compared with unsharded code on a laptop-class machine
(multi-device tests build their own meshes; everything else runs on device 0). This must happen before jax is
imported anywhere, hence at the top of conftest. The CPU programs compile at LLVM -O0 (tests/xla_env.py).

Session fixtures are built once per test process (each pytest-xdist worker has its own session).
"""
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import xla_env  # imports nothing: jax is not imported yet

os.environ.setdefault("XLA_FLAGS", xla_env.xla_flags(8))
# Tests never reach a model hub: every model is a local folder or built offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One persistent XLA cache for the whole run, shared by the xdist workers and the subprocesses tests start (both
# inherit this environment from the process that imports conftest first): most tests compile the same tiny students'
# programs, and jax reuses a program in memory only for the jitted function object that compiled it (measured:
# tests/train/test_loop.py 208 s → 167 s with two workers). Fresh for each run, removed at its end, so no test leans
# on an earlier run's programs.
XLA_CACHE = Path(tempfile.gettempdir()) / "embed_jax_test_xla_cache" / f"run{os.getpid()}"
OWNS_XLA_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(XLA_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

if importlib.util.find_spec("torch") is not None:  # torch is optional (the teachers extra)
    import torch

    # Other test processes share the machine's cores; OpenMP threads spin-waiting for busy cores made each MiniLM
    # forward ~5× slower than one thread does (measured on the 2-core reference machine), so torch runs one thread.
    torch.set_num_threads(1)


def pytest_sessionfinish(session):
    if OWNS_XLA_CACHE:
        shutil.rmtree(XLA_CACHE, ignore_errors=True)


import kit  # noqa: E402  (after the environment above: kit imports embed_jax)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A random 2-layer BERT (hidden 32, 128 positions) as a Hugging Face folder with MiniLM's tokenizer files."""
    return kit.save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture
def tiny_training_state(tiny_bert):
    """A fresh training state of `tiny_bert` (FC1 24-d + an 8-d reduction head, every parameter trainable, one
    device) with its jitted step: kit.tiny_training_state, for tests of a step, an optimizer or a checkpoint that
    need a real stage's state but no records or workdir."""
    return kit.tiny_training_state(tiny_bert)


@pytest.fixture(scope="session")
def teacher_records(tmp_path_factory) -> Path:
    """64 WordNet definitions with real all-MiniLM-L6-v2 vectors (384-d, float32, 2 shards), written by the real
    export into runs/records (a `train` folder beside it is the layout scripts/run.sh writes). Read-only: a test
    that edits records copies them first."""
    from embed_jax.teachers import export

    config = kit.minilm_export_config(tmp_path_factory.mktemp("run") / "records")
    export.run_export(config)
    return Path(config.output_dir)


@pytest.fixture(scope="session")
def pair_records(tmp_path_factory) -> Path:
    """Real MiniLM records of 10 training-side WordNet synsets' definitions and usage examples, 2 validation ones
    and two unpaired texts (kit.export_wordnet_pair_records): what a pair stage trains on. Read-only."""
    return kit.export_wordnet_pair_records(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="session")
def minilm_tokenizer_files(tmp_path_factory) -> Path:
    """Only the tokenizer files of all-MiniLM-L6-v2 (a --tokenizer folder for tiny BERT-vocabulary students)."""
    from embed_jax.assets import minilm_path

    return kit.copy_tokenizer_files(minilm_path(), tmp_path_factory.mktemp("minilm_tokenizer"))
