"""Export kill/resume soak: N `kill -9` of a small real export at random moments, then every file compared with an
uninterrupted export's, byte for byte (sha256).

    python benchmarks/soak_export.py                      # 5 kills, 600 texts, all-MiniLM-L6-v2, shards of 16,
                                                          # then 2 kills of 2 workers
    python benchmarks/soak_export.py --kills 20 --texts 600 --seed 3

The uninterrupted run comes first and sets the time scale: its start-up (imports, teacher loading) and its time per
shard. Then the same command runs on a second folder and is killed with SIGKILL `--kills` times, each at a moment
drawn uniformly over the time its missing shards should take after start-up (kills during start-up test nothing
that a kill between shards does not); every other kill waits instead for this run's first shard temporary file to
appear and kills then, mid-write. Then `--worker_kills` rounds do the same to `--workers` workers on a third folder
(`--config.worker_index/num_workers`), each round killing every worker at once. A run that finishes before its kill
ends its series early (the table says so). Each series then runs once more to completion, `python -m
embed_jax.data.verify` checks the folder, and every file is compared with the uninterrupted export's by sha256 (the
many-worker folder: its records files, manifest, shards and sidecars; its coordination files name another worker
count).

A soak must prove that it interrupted the export: each kill's line says where it landed, read from the folder after
it (mid-write: a shard's temporary file this round left; between shards; or after the export had finished). Exit
status 0 when all files are identical, verify passes, and every series had a kill that interrupted its export and
one that landed mid-write; 1 otherwise. Result: docs/reliability.md, "Export".
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
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


def export_command(folder: Path, corpus: Path, shard_size: int, worker: tuple[int, int] | None = None) -> list[str]:
    overrides = {"output_dir": folder, "corpus.kind": "text", "corpus.paths": corpus, "teacher_order": "minilm",
                 "shard_size": shard_size, "max_batch_size": 8, "storage_dtype": "float16", "torch_threads": 1,
                 "progress_every_s": 60}
    if worker is not None:
        overrides["worker_index"], overrides["num_workers"] = worker
    return [sys.executable, "-m", "embed_jax.teachers.export", "--config=configs/teachers.py:smoke",
            *(f"--config.{key}={value}" for key, value in overrides.items())]


def start(command: list[str]) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def finished_shards(folder: Path) -> int:
    return len(list(folder.glob("shard-*.json")))


def shard_temporaries(folder: Path) -> set[str]:
    return {path.name for path in folder.glob("shard-*.tmp")}


def kill_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
    for process in processes:
        process.wait()


def kill_after_shards(processes: list[subprocess.Popen], folder: Path, shards: int, delay: float) -> bool:
    """SIGKILL once `folder` holds `shards` finished shards, `delay` s later (into the next shard, or start-up when
    `shards` are there already): by progress, not by the clock, so that a busier or idler machine moves the kill
    with the run. False if every process ended first."""
    while finished_shards(folder) < shards:
        if all(process.poll() is not None for process in processes):
            return False
        time.sleep(0.005)
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if all(process.poll() is not None for process in processes):
            return False
        time.sleep(0.005)
    kill_all(processes)
    return True


def kill_mid_write(processes: list[subprocess.Popen], folder: Path) -> bool:
    """SIGKILL as soon as this round has a shard's temporary file (not one a killed run left); False if every process
    ended first."""
    leftovers = shard_temporaries(folder)
    while any(process.poll() is None for process in processes):
        if shard_temporaries(folder) - leftovers:
            kill_all(processes)
            return True
        time.sleep(0.001)
    return False


@dataclasses.dataclass(frozen=True)
class Landing:
    """What a kill interrupted, read from the folder after it: the shards it cut short mid-write (temporary files
    this round left), and whether the export was still unfinished (no manifest yet)."""

    how: str
    after_s: float
    workers: int
    finished: int
    cut_short: list[str]
    unfinished: bool

    @property
    def where(self) -> str:
        if not self.unfinished:
            return "after the export finished (nothing interrupted)"
        if self.cut_short:
            return f"mid-write of {', '.join(sorted(self.cut_short))}"
        return "between shards or in start-up"


def kill_round(command_of, folder: Path, workers: int, how: str, shards: int, delay: float) -> Landing | None:
    """One round: the export's `workers` processes started on `folder` and killed by `how` (mid-write, or `delay` s
    after `shards` shards are finished); None if they finished first."""
    leftovers = shard_temporaries(folder)
    started = time.monotonic()
    processes = [start(command_of(index)) for index in range(workers)]
    landed = (kill_mid_write(processes, folder) if how == "mid-write"
              else kill_after_shards(processes, folder, shards, delay))
    if not landed:
        return None
    return Landing(how, time.monotonic() - started, workers, finished_shards(folder),
                   sorted(shard_temporaries(folder) - leftovers), not is_complete(folder))


def is_complete(folder: Path) -> bool:
    """Whether the export in `folder` finished: its manifest (written first, "in_progress") says "complete"."""
    try:
        return json.loads((folder / "manifest.json").read_text()).get("status") == "complete"
    except (FileNotFoundError, ValueError):
        return False


def run_to_end(command_of, folder: Path, workers: int) -> str | None:
    """The export's workers run to completion on `folder`; the stderr of one that failed, else None."""
    processes = [start(command_of(index)) for index in range(workers)]
    errors = [process.communicate()[1] for process in processes]
    return next((error for process, error in zip(processes, errors) if process.returncode != 0), None)


def file_hashes(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def compare(reference: Path, soaked: Path, *, records_only: bool) -> list[str]:
    """Names of the files that differ (or that only one folder has); `records_only` leaves out the export's
    coordination files (dot files: locks and the worker count, which a many-worker export writes differently)."""
    ours, theirs = file_hashes(soaked), file_hashes(reference)
    names = {name for name in set(ours) | set(theirs) if not (records_only and name.startswith("."))}
    return sorted(name for name in names if ours.get(name) != theirs.get(name))


def verify(folder: Path) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "embed_jax.data.verify", f"--records={folder}"], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return done.returncode, (done.stdout.strip().splitlines() or [done.stderr.strip()])[-1].strip()


def soak_series(name: str, folder: Path, reference: Path, command_of, workers: int, kills: int, rng: random.Random,
                per_shard: float, num_shards: int) -> tuple[list[Landing], list[str]]:
    """`kills` rounds of kills on `folder` (by turns at random and mid-write), a run to the end, verify and the
    sha256 comparison with `reference`: the kills that landed, and the problems found."""
    print(f"{name}: {workers} worker(s) on {folder}")
    print(f"{'kill':>4}  {'how':<9} {'after s':>8}  {'shards finished':>15}  where")
    landings = []
    for kill in range(1, kills + 1):
        how = "mid-write" if kill % 2 == 0 else "random"
        # A random point of what is left: after 0 to all-but-one of the missing shards, part of a shard's time on.
        finished = finished_shards(folder)
        shards = finished + rng.randrange(max(num_shards - finished - workers, 1))
        landed = kill_round(command_of, folder, workers, how, shards, rng.uniform(0.0, per_shard))
        if landed is None:
            print(f"{kill:>4}  {how:<9} the run finished before its kill: the series ends here")
            break
        landings.append(landed)
        print(f"{kill:>4}  {how:<9} {landed.after_s:>8.2f}  {landed.finished:>15}  {landed.where}")
    problems = []
    failed = run_to_end(command_of, folder, workers)
    if failed is not None:
        return landings, [f"{name}: the run to the end failed: {failed.strip().splitlines()[-1]}"]
    status, summary = verify(folder)
    print(f"verify: exit {status}, {summary}")
    if status != 0:
        problems.append(f"{name}: verify exit {status}")
    differing = compare(reference, folder, records_only=workers > 1)
    print(f"compared {len(file_hashes(reference))} files by sha256"
          + (" (records files: coordination files differ by worker count)" if workers > 1 else "") + ": "
          + ("all identical" if not differing else f"{len(differing)} differ: {', '.join(differing)}"))
    if differing:
        problems.append(f"{name}: {len(differing)} files differ")
    interrupted = [landed for landed in landings if landed.unfinished]
    mid_write = [landed for landed in interrupted if landed.cut_short]
    print(f"landed: {len(interrupted)} kills that interrupted the export, {len(mid_write)} of them mid-write")
    if not interrupted:
        problems.append(f"{name}: no kill interrupted the export (nothing was tested)")
    elif not mid_write:
        problems.append(f"{name}: no kill landed mid-write")
    return landings, problems


def time_reference(folder: Path, corpus: Path, shard_size: int) -> dict[str, float]:
    """The uninterrupted export into `folder`, timed: its total, start-up and time per shard (s)."""
    started = time.monotonic()
    process = start(export_command(folder, corpus, shard_size))
    first_shard_at = None
    while process.poll() is None:
        if first_shard_at is None and finished_shards(folder):
            first_shard_at = time.monotonic() - started
        time.sleep(0.005)
    if process.returncode != 0:
        raise SystemExit(process.stderr.read())
    total = time.monotonic() - started
    per_shard = (total - (first_shard_at or total)) / max(finished_shards(folder) - 1, 1)
    return {"total": total, "startup": max((first_shard_at or total) - per_shard, 0.1), "per_shard": per_shard}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--texts", type=int, default=600)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="workers of the many-worker series")
    parser.add_argument("--worker_kills", type=int, default=2,
                        help="kills of the many-worker series (every worker at once; 0: no such series)")
    parser.add_argument("--keep", help="folder to keep the two exports in (default: a temporary one)")
    parser.add_argument("--keep_reference", action="store_true",
                        help="with --keep: reuse a finished uninterrupted export there (and its timing)")
    arguments = parser.parse_args()
    if arguments.kills < 1 or arguments.texts < 1 or arguments.shard_size < 1 or arguments.workers < 2:
        parser.error("--kills, --texts and --shard-size must be positive, --workers at least 2")
    rng = random.Random(arguments.seed)
    work = Path(arguments.keep or tempfile.mkdtemp(prefix="soak_export_"))
    reference, soaked = work / "reference", work / "soaked"
    timing_file = work / "reference_timing.json"
    kept = arguments.keep_reference and timing_file.is_file() and is_complete(reference)
    # A soak starts from empty folders: a finished one would leave a kill nothing to interrupt.
    for name in ("soaked", f"soaked-{arguments.workers}-workers") + (() if kept else ("reference",)):
        shutil.rmtree(work / name, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.txt"
    if not kept:
        write_corpus(corpus, arguments.texts)
        timing_file.write_text(json.dumps(time_reference(reference, corpus, arguments.shard_size)))
    timing = json.loads(timing_file.read_text())
    num_shards, per_shard = finished_shards(reference), timing["per_shard"]
    print(f"uninterrupted{' (kept from an earlier run)' if kept else ''}: {arguments.texts} texts, {num_shards} "
          f"shards in {timing['total']:.1f} s (start-up ~{timing['startup']:.1f} s, ~{per_shard:.2f} s per shard)")

    problems = []
    series = [("one worker", soaked, lambda index: export_command(soaked, corpus, arguments.shard_size), 1,
               arguments.kills)]
    if arguments.worker_kills:
        many = work / f"soaked-{arguments.workers}-workers"
        series.append((f"{arguments.workers} workers", many,
                       lambda index: export_command(many, corpus, arguments.shard_size, (index, arguments.workers)),
                       arguments.workers, arguments.worker_kills))
    for name, folder, command_of, workers, kills in series:
        problems += soak_series(name, folder, reference, command_of, workers, kills, rng, per_shard, num_shards)[1]
    for problem in problems:
        print(f"FAILED  {problem}")
    print(f"folders in {work}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
