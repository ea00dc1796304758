"""Export kill/resume soak: N `kill -9` of a small real export at random moments, then every file compared with an
uninterrupted export's, byte for byte (sha256).

    python benchmarks/soak_export.py                      # 5 kills, 600 texts, all-MiniLM-L6-v2, shards of 16
    python benchmarks/soak_export.py --kills 20 --texts 600 --seed 3

The uninterrupted run comes first and sets the time scale: its start-up (imports, teacher loading) and its time per
shard. Then the same command runs on a second folder and is killed with SIGKILL `--kills` times, each at a moment
drawn uniformly over the time its missing shards should take after start-up (kills during start-up test nothing
that a kill between shards does not); every other kill waits instead for this run's first shard temporary file to
appear and kills then, mid-write. A run that finishes before its kill ends
the series early (the table says so). Then the command runs once more to completion, `python -m
embed_jax.data.verify` checks the folder, and every file of both folders (manifest, shards, sidecars, the export's
coordination files) is compared by sha256. Exit status 0 when all are identical, 1 otherwise. Result:
docs/reliability.md, "Export".
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_corpus(path: Path, num_texts: int) -> None:
    """Real English of mixed lengths: WordNet definitions with an ABC news document every 25th line."""
    sys.path.insert(0, str(REPO))
    from embed_jax.data import corpora

    texts = [item.text for item in corpora.builtin_texts("wordnet", num_texts)]
    texts[::25] = [item.text for item in corpora.builtin_texts("lee_background", len(texts[::25]))]
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")


def export_command(folder: Path, corpus: Path, shard_size: int) -> list[str]:
    overrides = {"output_dir": folder, "corpus.kind": "text", "corpus.paths": corpus, "teacher_order": "minilm",
                 "shard_size": shard_size, "max_batch_size": 8, "storage_dtype": "float16", "torch_threads": 1,
                 "progress_every_s": 60}
    return [sys.executable, "-m", "embed_jax.teachers.export", "--config=configs/teachers.py:smoke",
            *(f"--config.{key}={value}" for key, value in overrides.items())]


def start(command: list[str]) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def finished_shards(folder: Path) -> int:
    return len(list(folder.glob("shard-*.json")))


def kill_at_random(process: subprocess.Popen, delay: float) -> bool:
    """SIGKILL after `delay` s; False if the process ended first."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def kill_mid_write(process: subprocess.Popen, folder: Path) -> bool:
    """SIGKILL as soon as this run has a shard's temporary file (not one a killed run left); False if the process
    ended first."""
    leftovers = {path.name for path in folder.glob("shard-*.tmp")}
    while process.poll() is None:
        if any(path.name not in leftovers for path in folder.glob("shard-*.tmp")):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.001)
    return False


def file_hashes(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="folder to keep the two exports in (default: a temporary one)")
    arguments = parser.parse_args()
    if arguments.kills < 1 or arguments.texts < 1 or arguments.shard_size < 1:
        parser.error("--kills, --texts and --shard-size must be positive")
    rng = random.Random(arguments.seed)
    work = Path(arguments.keep or tempfile.mkdtemp(prefix="soak_export_"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.txt"
    write_corpus(corpus, arguments.texts)
    reference, soaked = work / "reference", work / "soaked"

    started = time.monotonic()
    process = start(export_command(reference, corpus, arguments.shard_size))
    first_shard_at = None
    while process.poll() is None:
        if first_shard_at is None and finished_shards(reference):
            first_shard_at = time.monotonic() - started
        time.sleep(0.005)
    if process.returncode != 0:
        print(process.stderr.read(), file=sys.stderr)
        return 1
    total = time.monotonic() - started
    num_shards = finished_shards(reference)
    per_shard = (total - (first_shard_at or total)) / max(num_shards - 1, 1)
    startup = max((first_shard_at or total) - per_shard, 0.1)
    print(f"uninterrupted: {arguments.texts} texts, {num_shards} shards in {total:.1f} s "
          f"(start-up ~{startup:.1f} s, ~{per_shard:.2f} s per shard)")

    print(f"{'kill':>4}  {'how':<9} {'after s':>8}  {'shards finished':>15}")
    for kill in range(1, arguments.kills + 1):
        process = start(export_command(soaked, corpus, arguments.shard_size))
        kill_started = time.monotonic()
        if kill % 2 == 0:
            how, landed = "mid-write", kill_mid_write(process, soaked)
        else:
            remaining = per_shard * (num_shards - finished_shards(soaked))
            how, landed = "random", kill_at_random(process, startup + rng.uniform(0.0, remaining))
        if not landed:
            print(f"{kill:>4}  {how:<9} the run finished before its kill: the series ends here")
            break
        print(f"{kill:>4}  {how:<9} {time.monotonic() - kill_started:>8.2f}  {finished_shards(soaked):>15}")
    final = subprocess.run(export_command(soaked, corpus, arguments.shard_size), cwd=REPO, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    if final.returncode != 0:
        print(final.stderr, file=sys.stderr)
        return 1
    verify = subprocess.run([sys.executable, "-m", "embed_jax.data.verify", f"--records={soaked}"], cwd=REPO,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    print(f"verify: exit {verify.returncode}, {verify.stdout.strip().splitlines()[-1].strip()}")
    ours, theirs = file_hashes(soaked), file_hashes(reference)
    differing = sorted(name for name in set(ours) | set(theirs) if ours.get(name) != theirs.get(name))
    print(f"compared {len(theirs)} files by sha256: "
          + ("all identical" if not differing else f"{len(differing)} differ: {', '.join(differing)}"))
    print(f"folders in {work}")
    return 0 if not differing and verify.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
