"""Many export workers, one folder: real processes (torchrun and explicit indices), killed and restarted for real.

The teacher is the tiny random BERT of conftest.py (mean pooling), so that a worker process costs its imports only.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embed_jax.data import corpora, records
from embed_jax.teachers import export, workers
from embed_jax.teachers.workers import Worker

REPO = Path(__file__).resolve().parents[2]
SHARD_SIZE = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """40 real texts with two blank lines among them: 10 shards of 4 kept texts."""
    lines = [item.text for item in corpora.builtin_texts("wordnet", 40)]
    lines[5:5] = ["", "  "]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def overrides(output: Path, corpus: Path, teacher: Path, **more) -> dict:
    return {"output_dir": str(output), "corpus.kind": "text", "corpus.paths": str(corpus),
            "teachers.minilm.path": str(teacher), "teachers.minilm.pooling": "mean", "teacher_order": "minilm",
            "storage_dtype": "float32", "shard_size": SHARD_SIZE, "torch_threads": 1, "progress_every_s": 0.0, **more}


def command(settings: dict) -> list[str]:
    return [sys.executable, "-m", "embed_jax.teachers.export", "--config=configs/teachers.py:smoke"] + [
        f"--config.{key}={value}" for key, value in settings.items()]


def environment(**extra) -> dict:
    clean = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**clean, "PYTHONPATH": str(REPO), **extra}


def config_of(settings: dict, shipped_config):
    config = shipped_config("smoke")
    for key, value in settings.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def shard_digests(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.glob("shard-*")) if not path.name.endswith(".tmp")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, tiny_bert, shipped_config) -> Path:
    """The one-worker export every multi-worker export must equal, byte for byte."""
    folder = tmp_path_factory.mktemp("reference") / "records"
    manifest = export.run_export(config_of(overrides(folder, corpus, tiny_bert), shipped_config))
    assert manifest.num_records == 40 and len(manifest.shards) == 10
    return folder


@pytest.mark.slow
def test_three_torchrun_workers_write_the_one_worker_records(tmp_path, corpus, tiny_bert, reference):
    folder = tmp_path / "records"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3"]
    finished = subprocess.run(torchrun + command(overrides(folder, corpus, tiny_bert))[1:], cwd=REPO,
                              env=environment(), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert shard_digests(folder) == shard_digests(reference)
    manifest = records.read_manifest(folder)
    assert manifest == records.read_manifest(reference)
    assert json.loads((folder / workers.WORKERS_FILE).read_text()) == {"num_workers": 3}
    for index in range(3):
        assert f"worker {index} of 3" in finished.stderr


def test_shares_are_disjoint_and_cover_every_shard_in_corpus_order():
    shares = [[shard for shard in range(10) if Worker(index, 3).owns(shard)] for index in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]


@pytest.mark.slow
def test_killed_worker_restarted_redoes_only_its_own_unfinished_shard(tmp_path, corpus, tiny_bert, shipped_config):
    folder = tmp_path / "records"
    # One text per forward: worker 1's five shards take seconds, so the kill lands while it still has shards to do.
    settings = overrides(folder, corpus, tiny_bert, max_batch_size=1, num_workers=2)
    worker_0 = subprocess.run(command({**settings, "worker_index": 0}), cwd=REPO, env=environment(),
                              capture_output=True, text=True, timeout=600)
    assert worker_0.returncode == 0, worker_0.stderr[-4000:]
    assert "shards of workers 1 are still missing" in worker_0.stderr
    assert json.loads((folder / records.MANIFEST_NAME).read_text())["status"] == records.STATUS_IN_PROGRESS

    worker_1 = subprocess.Popen(command({**settings, "worker_index": 1}), cwd=REPO, env=environment(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (folder / "shard-00001.json").exists():
        assert worker_1.poll() is None, worker_1.stderr.read().decode()[-4000:]
        assert time.monotonic() < deadline, "worker 1 wrote no shard in time"
        time.sleep(0.01)
    worker_1.send_signal(signal.SIGKILL)
    worker_1.wait()
    finished = {path.name: path.stat().st_ino for path in folder.glob("shard-*.json")}
    assert "shard-00009.json" not in finished, "worker 1 had finished before the kill; the test proves nothing"

    restarted = subprocess.run(command({**settings, "worker_index": 1}), cwd=REPO, env=environment(),
                               capture_output=True, text=True, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-4000:]
    assert "resuming: " in restarted.stderr and f"wrote 40 records in 10 shards" in restarted.stderr
    # Shards finished before the kill (worker 0's, and worker 1's first) are the same files, never rewritten.
    assert {name: (folder / name).stat().st_ino for name in finished} == finished
    # The reference batches alike (one text per forward): batching changes float rounding, not the workers.
    reference = tmp_path / "reference"
    export.run_export(config_of(overrides(reference, corpus, tiny_bert, max_batch_size=1), shipped_config))
    assert shard_digests(folder) == shard_digests(reference)
    assert records.read_manifest(folder) == records.read_manifest(reference)


@pytest.mark.slow
def test_changed_worker_count_on_a_half_done_folder_is_refused(tmp_path, corpus, tiny_bert, reference,
                                                               shipped_config, monkeypatch):
    folder = tmp_path / "records"
    assert export.run_export(config_of(overrides(folder, corpus, tiny_bert, worker_index=0, num_workers=2),
                                       shipped_config)) is None
    before = shard_digests(folder)
    with pytest.raises(workers.WorkerError, match=r"unfinished export started by 2 worker\(s\); this run is worker 0 "
                                                  r"of 3 .*\(--config.num_workers=2\); or, for another count, export into "
                                                  r"a new folder with --config.reuse_from="):
        export.run_export(config_of(overrides(folder, corpus, tiny_bert, worker_index=0, num_workers=3),
                                    shipped_config))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(workers.WorkerError, match=r"started by 2 worker\(s\); this run is worker 0 of 1"):
        export.run_export(config_of(overrides(folder, corpus, tiny_bert), shipped_config))
    assert shard_digests(folder) == before

    # The way out the message gives: a new folder with any count, copying the finished shards.
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    encoded = []
    original = export.encode_shard
    monkeypatch.setattr(export, "encode_shard", lambda texts, *args: encoded.append(len(texts)) or original(
        texts, *args))
    new = tmp_path / "new"
    export.run_export(config_of(overrides(new, corpus, tiny_bert, reuse_from=str(folder)), shipped_config))
    assert len(encoded) == 5  # worker 1's shares only
    assert shard_digests(new) == shard_digests(reference)


@pytest.mark.slow
def test_two_workers_with_one_index_at_once(tmp_path, corpus, tiny_bert):
    """The first holds the index (its lock); the second exits at once with what to do, and touches nothing."""
    folder = tmp_path / "records"
    settings = overrides(folder, corpus, tiny_bert, worker_index=1, num_workers=2)
    hold = ("import sys, time; from pathlib import Path; from embed_jax.teachers import workers\n"
            "with workers.claim(Path(sys.argv[1]), workers.Worker(1, 2)):\n"
            "    print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(folder)], cwd=REPO, env=environment(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run(command(settings), cwd=REPO, env=environment(), capture_output=True, text=True,
                                timeout=300)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert second.returncode == 2
    assert "error: " in second.stderr and ".export-worker-00001.lock is locked: another process is already worker " \
           "1 of 2 of this export" in second.stderr and "--config.worker_index (0 … 1)" in second.stderr
    assert sorted(path.name for path in folder.iterdir()) == [".export-worker-00001.lock"]
    # The holder was killed with SIGKILL: its lock went with it, and the index can be claimed again.
    with workers.claim(folder, Worker(1, 2)):
        pass


@pytest.mark.parametrize("index, count, environment_values, message", [
    (2, 2, {}, r"worker_index=2 with num_workers=2: the index must be 0 … 1"),
    (-1, 0, {"RANK": "3", "WORLD_SIZE": "3"}, r"RANK=3 with WORLD_SIZE=3: the index must be 0 … 2"),
    (1, 0, {}, r"worker_index=1 and num_workers=0: set both"),
    (-1, 0, {"RANK": "x", "WORLD_SIZE": "2"}, r"RANK='x' and WORLD_SIZE='2' must both be integers"),
])
def test_bad_worker_settings_are_named(index, count, environment_values, message):
    with pytest.raises(workers.WorkerError, match=message):
        workers.resolve_worker(index, count, environment_values)


def test_torchrun_environment_and_explicit_settings():
    assert workers.resolve_worker(-1, 0, {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}) == Worker(2, 4)
    assert workers.resolve_worker(1, 3, {"RANK": "2", "WORLD_SIZE": "4"}) == Worker(1, 3)  # explicit wins
    assert workers.resolve_worker(-1, 0, {}) == Worker(0, 1)


@pytest.mark.slow
def test_worker_index_beyond_the_count_writes_nothing(tmp_path, corpus, tiny_bert, shipped_config):
    folder = tmp_path / "records"
    with pytest.raises(workers.WorkerError, match=r"worker_index=3 with num_workers=3"):
        export.run_export(config_of(overrides(folder, corpus, tiny_bert, worker_index=3, num_workers=3),
                                    shipped_config))
    assert not folder.exists()
