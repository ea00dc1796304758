"""What every cost before and around the first step grows with: records at the paper's shape, at several sizes.

    python benchmarks/scale.py --out /work/data/scale --sizes 20000 100000 400000
    python benchmarks/scale.py --out DIR --sizes 20000 50000 --keep        # keep the folders (default: deleted)

Each size is a records folder written by the real writer (`records.write_shard`: shards, sidecars with their record
index, manifest) at the paper's shape: 12288-d float16 targets (NV-Embed-v2 4096 + stella 8192, random unit
vectors), shards of 4096 records (configs/jasper_teachers.py), texts of passage length (real built-in passages, Wikipedia
and the Bible, joined to a log-normal length of median 150 words, capped at 400 words ≈ 512 tokens: the paper's
max length). Beside it, a held-out folder of 512 records.

Each size is then measured in a fresh child process (its peak RSS is that size's), the shards evicted from the page
cache before each cold measurement (fsync + posix_fadvise DONTNEED: reads come from the disk, not memory):

    check_records_cheaply     what training runs before step 1 (manifest, sidecars, each shard's count + first id)
    holdout (preflight)       batches.repeated_records: held-out ids and text hashes against the training ones
    holdout (eval)            eval/overlap.scan_records: every id and text hash against the evaluation hold-out
    holdout by reading        the same ids and texts read from the records (the check before sidecars held them)
    open pipeline             RecordDataSource + make_dataset (grain index shuffle, process slice) + iter()
    first batch               global batch 128, max length 512, the MiniLM tokenizer
    time to first batch       what a training run pays before it (BEFORE_FIRST_BATCH: the preflight's and the
                              stage's checks and opens, the hold-out check, the first batch)
    restore iterator          a fresh iterator set to a mid-epoch grain state, then its next batch
    steady                    records/s and MB/s (record bytes) over --steady-batches batches, one process; and
                              the split of one batch's time: raw reads, decoding to float32, tokenising
    verify --sample=16 / verify (full: every record and every file's sha256)
    peak RSS                  the child's

It prints one table row per size, then the extrapolation to --extrapolate records (a least-squares line through the
sizes for each cost), and writes everything as JSON under OUT/results/. Each size's results are kept: a rerun
measures only the sizes without them. `uptime`'s load average is printed with each size: the machine is shared.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # this checkout's embed_jax, not another install's

import harness  # noqa: E402

TEACHERS = (("nv_embed_v2", 4096), ("stella_en_1.5B_v5", 8192))  # the paper's target: 12288-d
SHARD_SIZE = 4096  # configs/jasper_teachers.py
HELD_OUT_RECORDS = 512
TOKENIZER = "asset:all-MiniLM-L6-v2"
GLOBAL_BATCH, MAX_LENGTH, BUCKETS = 128, 512, (64, 128, 256)
MEDIAN_WORDS, MAX_WORDS = 150, 400
# Bytes a record takes on disk beyond its vector and text (header 16 B, id ~16 B, ArrayRecord's chunk framing),
# rounded up from the 20k folder: the disk check's estimate.
RECORD_OVERHEAD_BYTES = 160
SAFETY = 1.05


class DiskTooSmall(SystemExit):
    pass


def record_bytes(dim: int) -> int:
    """Estimated bytes a record takes: its float16 vector, a passage of text, overhead."""
    return dim * 2 + int(MEDIAN_WORDS * 1.2 * 6) + RECORD_OVERHEAD_BYTES


def check_disk(out: Path, sizes: list[int], dim: int) -> None:
    """Stop, in one line, when the largest size (with the held-out folder) cannot fit: sizes are written one at a
    time and deleted after their measurement unless --keep."""
    out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out).free
    needed = int((max(sizes) + HELD_OUT_RECORDS) * record_bytes(dim) * SAFETY)
    if needed > free:
        raise DiskTooSmall(f"benchmarks/scale.py: the largest size, {max(sizes):,} records × {dim}-d float16, needs "
                           f"~{needed / 1e9:.1f} GB in {out}; {free / 1e9:.1f} GB free there. Pass smaller --sizes, "
                           f"or an --out on a larger disk.")


# ------------------------------------------------------------------------------------------------ writing


def passages() -> list[str]:
    from embed_jax.data import corpora

    return [item.text for item in corpora.builtin_texts("wiki+bible", 20000)]


def synthetic_texts(pool: list[str], start: int, count: int, seed: int) -> list[str]:
    """Texts of passage length: consecutive pool passages joined up to a log-normal word count."""
    rng = np.random.default_rng([seed, start])
    lengths = np.minimum(rng.lognormal(np.log(MEDIAN_WORDS), 0.6, size=count).astype(int) + 5, MAX_WORDS)
    texts = []
    for offset, length in enumerate(lengths):
        words, cursor = [], (start + offset) * 7919 % len(pool)
        while len(words) < length:
            words += pool[cursor].split()
            cursor = (cursor + 1) % len(pool)
        texts.append(" ".join(words[:length]))
    return texts


def unit_vectors(count: int, dim: int, seed: int, shard: int) -> np.ndarray:
    vectors = np.random.default_rng([seed, shard]).standard_normal((count, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def draft_manifest(num_records: int, name: str, shard_size: int):
    from embed_jax.data import records

    teachers = tuple(records.TeacherInfo(name=teacher, path="synthetic", dim=dim, pooling="mean", prompt="",
                                         max_seq_length=MAX_LENGTH, weights_sha256="synthetic", order=order)
                     for order, (teacher, dim) in enumerate(TEACHERS))
    corpus = {"kind": "synthetic", "name": name, "records": num_records}
    fields = {"schema_version": records.SCHEMA_VERSION, "teachers": [dataclasses.asdict(t) for t in teachers],
              "dtype": "float16", "normalisation": records.NORMALISATION, "corpus": corpus, "shard_size": shard_size}
    return records.Manifest(schema_version=records.SCHEMA_VERSION, export_id=records.export_id(fields),
                            status=records.STATUS_IN_PROGRESS, teachers=teachers,
                            teacher_dim=sum(dim for _, dim in TEACHERS), dtype="float16",
                            normalisation=records.NORMALISATION, corpus=corpus, shard_size=shard_size)


def write_folder(folder: Path, num_records: int, pool: list[str], *, prefix: str, seed: int,
                 shard_size: int = SHARD_SIZE) -> dict:
    """A complete records folder of `num_records` synthetic records; resumes at the first shard without a sidecar.
    Returns what writing it cost."""
    from embed_jax.data import records

    manifest = draft_manifest(num_records, prefix, shard_size)
    manifest_path = folder / records.MANIFEST_NAME
    if manifest_path.exists() and records.read_manifest_file(manifest_path).status == records.STATUS_COMPLETE:
        return json.loads((folder / "written.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(manifest.to_json(), encoding="utf-8")
    shards, generate_s, write_s = [], 0.0, 0.0
    for index, start in enumerate(range(0, num_records, shard_size)):
        sidecar = folder / f"{records.shard_stem(index)}.json"
        count = min(shard_size, num_records - start)
        if sidecar.exists():
            shards.append(records.check_sidecar(folder, manifest, sidecar))
            continue
        began = time.perf_counter()
        texts = synthetic_texts(pool, start, count, seed)
        vectors = unit_vectors(count, manifest.teacher_dim, seed, index)
        rows = [(f"{prefix}:{start + row:09d}", texts[row], vectors[row]) for row in range(count)]
        generate_s += time.perf_counter() - began
        began = time.perf_counter()
        shards.append(records.write_shard(folder, index, rows, manifest, corpus_hash="synthetic"))
        write_s += time.perf_counter() - began
    done = dataclasses.replace(manifest, status=records.STATUS_COMPLETE, num_records=num_records,
                               shards=tuple(shards), corpus_fingerprint="synthetic")
    manifest_path.write_text(done.to_json(), encoding="utf-8")
    shard_bytes = sum(shard.num_bytes for shard in shards)
    sidecar_bytes = sum((folder / f"{records.shard_stem(i)}.json").stat().st_size for i in range(len(shards)))
    written = {"records": num_records, "shards": len(shards), "shard_bytes": shard_bytes,
               "sidecar_bytes": sidecar_bytes, "manifest_bytes": manifest_path.stat().st_size,
               "generate_s": generate_s, "write_s": write_s,
               "write_MB_per_s": shard_bytes / 1e6 / write_s if write_s else None}
    (folder / "written.json").write_text(json.dumps(written))
    return written


# ------------------------------------------------------------------------------------------------ measuring


def evict(folder: Path) -> None:
    """Drop the folder's files from the page cache (flushed first), so the next read comes from the disk."""
    for path in folder.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(function, *args, **kwargs):
    began = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - began


def measure(folder: Path, held_out: Path, steady_batches: int) -> dict:
    """Every cost of the module docstring, for one folder (run in a child process)."""
    from embed_jax.data import pipeline, records
    from embed_jax.eval import overlap
    from embed_jax.train import batches

    out: dict = {"rss_MiB_after": {}}
    quiet = lambda _: None  # noqa: E731

    def timed(function, *args, **kwargs):  # and the peak RSS after it, to tell which cost holds the memory
        result, seconds = globals()["timed"](function, *args, **kwargs)
        out["rss_MiB_after"][getattr(function, "__name__", "step")] = peak_rss_mib()
        return result, seconds

    evict(folder)
    manifest, out["check_records_cheaply_s"] = timed(records.check_records_cheaply, folder, "data.records_dir")
    evict(folder)
    train, out["open_source_s"] = timed(pipeline.RecordDataSource, folder)
    held = pipeline.RecordDataSource(held_out)
    evict(folder)
    repeats, out["holdout_preflight_s"] = timed(batches.repeated_records, train, held, log=quiet)
    out["holdout_preflight_repeats"] = [repeats.by_id, repeats.text_only]  # ids 0; texts: chance joins of one pool
    overlap.holdout_text_hashes()  # the hold-out's own texts: a constant cost, outside the timing
    evict(folder)
    scan, out["holdout_eval_s"] = timed(overlap.scan_records, str(folder))
    assert scan.num_records == len(train) and scan.num_offending == 0, scan
    evict(folder)
    _, out["holdout_by_reading_s"] = timed(lambda: sum(1 for _ in train.ids_and_texts()))

    def make(source):
        return pipeline.make_dataset(source, tokenizer=TOKENIZER, global_batch_size=GLOBAL_BATCH,
                                     max_length=MAX_LENGTH, length_buckets=BUCKETS, seed=0)

    evict(folder)
    began = time.perf_counter()
    source = pipeline.RecordDataSource(folder)
    iterator = iter(make(source))
    out["open_pipeline_s"] = time.perf_counter() - began
    _, out["first_batch_s"] = timed(next, iterator)

    state = iterator.get_state()
    evict(folder)
    began = time.perf_counter()
    restored = iter(make(pipeline.RecordDataSource(folder)))
    restored.set_state({**state, "next_index": len(source) // GLOBAL_BATCH // 2})
    next(restored)
    out["restore_iterator_s"] = time.perf_counter() - began
    out["iterator_state"] = json.dumps(state)[:200]

    evict(folder)
    mean_record = sum(shard.num_bytes for shard in manifest.shards) / manifest.num_records
    _, seconds = timed(lambda: [next(iterator) for _ in range(steady_batches)])
    out["steady_records_per_s"] = steady_batches * GLOBAL_BATCH / seconds
    out["steady_MB_per_s"] = out["steady_records_per_s"] * mean_record / 1e6
    out["mean_record_bytes"] = mean_record
    out.update(batch_split(source, steady_batches))

    evict(folder)
    out["verify_sample_s"] = run_verify(folder, "--sample=16")
    evict(folder)
    out["verify_full_s"] = run_verify(folder)
    out["peak_rss_MiB"] = peak_rss_mib()
    return out


def batch_split(source, count: int) -> dict:
    """Where one batch's time goes, read without grain's threads: raw record bytes (cold), decoding them to float32
    vectors, tokenising the texts. The decode share is what reading only some teacher blocks could save."""
    from embed_jax.data import pipeline, records

    rng = np.random.default_rng(1)
    tokenizer, _ = pipeline.load_tokenizer(TOKENIZER, MAX_LENGTH)
    read_s = decode_s = tokenize_s = 0.0
    for _ in range(count):
        indices = sorted(rng.choice(len(source), GLOBAL_BATCH, replace=False).tolist())
        raw, seconds = timed(source._shards.__getitems__, indices)
        read_s += seconds
        decoded, seconds = timed(lambda: [records.decode_record(data) for data in raw])
        decode_s += seconds
        _, seconds = timed(tokenizer.encode_batch, [record["text"] for record in decoded])
        tokenize_s += seconds
    rows = count * GLOBAL_BATCH
    return {"split_read_records_per_s": rows / read_s, "split_decode_records_per_s": rows / decode_s,
            "split_tokenize_records_per_s": rows / tokenize_s}


def run_verify(folder: Path, *extra: str) -> float:
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "embed_jax.data.verify", f"--records={folder}", *extra],
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"verify failed on {folder}: {harness.last_error_line(result.stdout + result.stderr)}")
    return time.perf_counter() - began


# ------------------------------------------------------------------------------------------------ report

ROWS = (("records", "{:,}"), ("shards", "{:,}"), ("GB", "{:.2f}"), ("manifest_KB", "{:.0f}"), ("sidecars_MB", "{:.1f}"),
        ("check_records_cheaply_s", "{:.2f}"), ("holdout_preflight_s", "{:.2f}"), ("holdout_eval_s", "{:.2f}"),
        ("holdout_by_reading_s", "{:.1f}"), ("open_pipeline_s", "{:.2f}"), ("first_batch_s", "{:.2f}"),
        ("time_to_first_batch_s", "{:.2f}"), ("restore_iterator_s", "{:.2f}"), ("steady_records_per_s", "{:,.0f}"),
        ("steady_MB_per_s", "{:.0f}"), ("split_read_records_per_s", "{:,.0f}"),
        ("split_decode_records_per_s", "{:,.0f}"), ("split_tokenize_records_per_s", "{:,.0f}"),
        ("verify_sample_s", "{:.1f}"), ("verify_full_s", "{:.1f}"), ("peak_rss_MiB", "{:,.0f}"))
# Costs that should not grow with the data: extrapolated only as a check that they do not.
RATES = {"steady_records_per_s", "steady_MB_per_s", "split_read_records_per_s", "split_decode_records_per_s",
         "split_tokenize_records_per_s"}


# What a training run pays before its first batch: the preflight checks and opens the records (train/preflight.py,
# train/batches.open_records: check_records_cheaply, then a RecordDataSource) and runs the hold-out check; the stage
# then checks and opens them again and builds its pipeline (open_pipeline: a RecordDataSource + make_dataset).
BEFORE_FIRST_BATCH = {"check_records_cheaply_s": 2, "open_source_s": 1, "holdout_preflight_s": 1,
                      "open_pipeline_s": 1, "first_batch_s": 1}


def with_totals(result: dict) -> dict:
    return {**result, "manifest_KB": result["manifest_bytes"] / 1e3,
            "time_to_first_batch_s": sum(result[key] * times for key, times in BEFORE_FIRST_BATCH.items())}


def table(results: list[dict], extrapolate: int) -> str:
    """One column per size and one for the least-squares line at `extrapolate` records (rates: their mean)."""
    results = [with_totals(result) if "manifest_bytes" in result else result for result in results]
    sizes = [result["records"] for result in results]
    header = "| cost | " + " | ".join(f"{size:,}" for size in sizes) + f" | {extrapolate:,} (extrapolated) |"
    lines = [header, "|---|" + "---:|" * (len(sizes) + 1)]
    for key, fmt in ROWS:
        values = [result.get(key) for result in results]
        if any(value is None for value in values):
            continue
        if key in RATES:
            predicted = float(np.mean(values))
        elif key == "records":
            predicted = extrapolate
        elif len(sizes) > 1:  # a cost does not shrink with the data: noise below the largest measured is clamped
            slope, intercept = np.polyfit(sizes, values, 1)
            predicted = max(intercept + slope * extrapolate, max(values))
        else:
            predicted = values[0] * extrapolate / sizes[0]
        cells = [fmt.format(value) for value in values] + [fmt.format(type(values[0])(predicted))
                                                           if key in ("records", "shards") else fmt.format(predicted)]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/work/data/scale"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 100000, 400000])
    parser.add_argument("--dim", type=int, default=sum(dim for _, dim in TEACHERS))
    parser.add_argument("--steady-batches", type=int, default=40)
    parser.add_argument("--extrapolate", type=int, default=8_000_000)
    parser.add_argument("--keep", action="store_true", help="keep each size's folder after measuring it")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child: one folder
    parser.add_argument("--held-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.held_out, args.steady_batches)))
        return 0
    if args.dim != sum(dim for _, dim in TEACHERS):
        parser.error(f"--dim: the synthetic teachers are {TEACHERS}; only {sum(d for _, d in TEACHERS)} is written")
    try:
        check_disk(args.out, args.sizes, args.dim)
    except DiskTooSmall as error:
        print(error, file=sys.stderr)
        return 2
    results_dir = args.out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    pool = None
    held_out = args.out / "held_out"
    results = []
    for size in sorted(args.sizes):
        result_file = results_dir / f"{size}.json"
        if result_file.exists():
            results.append(json.loads(result_file.read_text()))
            continue
        pool = pool or passages()
        write_folder(held_out, HELD_OUT_RECORDS, pool, prefix="heldout", seed=1, shard_size=HELD_OUT_RECORDS)
        folder = args.out / f"records_{size}"
        load_before = uptime()
        written = write_folder(folder, size, pool, prefix="scale", seed=0)
        child = subprocess.run([sys.executable, __file__, "--measure", str(folder), "--held-out", str(held_out),
                                "--steady-batches", str(args.steady_batches)], capture_output=True, text=True)
        if child.returncode:
            print(child.stderr[-3000:], file=sys.stderr)
            return 1
        result = {**written, **json.loads(child.stdout.strip().splitlines()[-1]),
                  "GB": written["shard_bytes"] / 1e9, "sidecars_MB": written["sidecar_bytes"] / 1e6,
                  "uptime_before": load_before, "uptime_after": uptime()}
        result_file.write_text(json.dumps(result, indent=1))
        results.append(result)
        print(f"{size:,} records: measured ({result['uptime_after']})", flush=True)
        if not args.keep:
            shutil.rmtree(folder)
    print(table(results, args.extrapolate))
    for result in results:
        print(f"{result['records']:,}: load before writing: {result['uptime_before']}; after measuring: "
              f"{result['uptime_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
