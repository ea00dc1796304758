r"""Kill/resume soak of training: N random `kill -9` of `python -m embed_jax.main`, then a bit-for-bit comparison of
every stage's final parameters and logged metrics against an uninterrupted run of the same command.

    python scripts/kill_resume_soak.py --kills=5 --work=/tmp/soak \
        --init_from=FOLDER --records_dir=RECORDS [--seed=0] [--min_mid_save=1 --min_mid_stage=1] \
        [-- --config.key=value ...]

    --init_from / --records_dir   the student's init folder and the teacher records (e.g. configs/distill.py's
                                  asset:all-MiniLM-L6-v2 and runs/default/records, or a tiny student: --make_inputs)
    --make_inputs                 build a tiny random BERT student (MiniLM's tokenizer) and 64 WordNet records with
                                  all-MiniLM-L6-v2 under --work first, as tests/train/conftest.py does (needs torch)

The command is configs/distill.py:smoke with log_every=1 (a resumed run logs its first step, so only a row per step
compares with an uninterrupted run), checkpoint_every=2 and 6 steps per stage, plus any overrides after `--`.
Each kill comes after a random number of logged rows (drawn over the reference run's rows, in increasing order, so
that each kill comes before the run could finish), then, by turns: the moment the next checkpoint save begins (its
N.orbax-checkpoint-tmp folder appears); as soon as a step is logged past a checkpoint committed short of its stage's
end; or a random part of the time a row takes (start-up, compilation, steps, saves and stage hand-overs alike).
After the N kills the command is rerun to the end. Timing columns (examples_per_s, tokens_per_s, steps_per_s) are
left out of the comparison.

A soak must prove that it interrupted something: each kill's line says where it landed, read from the workdir just
after it: MID-SAVE when a save it started was left uncommitted (N.orbax-checkpoint-tmp), MID-STAGE when the rerun
resumes a stage from a checkpoint short of its end. Exit status 0 when everything is bit-identical and at least
--min_mid_save and --min_mid_stage kills landed so (1 each by default); 1 otherwise (docs/reliability.md has the
last result).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMING_COLUMNS = ("examples_per_s", "tokens_per_s", "steps_per_s")
# Kills by turns: as the next checkpoint save begins, mid-stage after a checkpoint, and at a random moment.
KILL_KINDS = ("mid-save", "mid-stage", "random")
SOAK_OVERRIDES = ("--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.stage1.num_steps=6",
                  "--config.stage2.num_steps=6", "--config.stage3_heads.num_steps=6", "--config.stage3.num_steps=6",
                  # The stages any records can train: the pair stage needs WordNet pairs, FC1 from the start needs the
                  # init folder among the teachers.
                  "--config.stage_order=('stage1','stage2','stage3_heads','stage3')", "--config.stage1.fc1_init=")


def train_command(workdir: Path, init_from: str, records_dir: str, teacher_dim: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "embed_jax.main", "--config=configs/distill.py:smoke", f"--workdir={workdir}",
            f"--config.model.init_from={init_from}", f"--config.model.teacher_dim={teacher_dim}",
            "--config.data.teacher_weights=",
            "--config.model.reduction_dims=(16,)", "--config.stage2.last_layers=2",
            f"--config.data.records_dir={records_dir}", *SOAK_OVERRIDES, *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def committed_steps(stage_dir: Path) -> list[int]:
    """The stage's committed checkpoints: step folders named by their number (a save in flight, or one a kill cut
    short, is N.orbax-checkpoint-tmp... until Orbax renames it on commit)."""
    folder = stage_dir / "checkpoints"
    return sorted(int(path.name) for path in folder.glob("*") if path.name.isdigit())


def saves_in_flight(workdir: Path, since: float) -> list[str]:
    """Checkpoint folders not yet committed that were made at or after `since` (time.time()): the saves a kill at
    this moment interrupts (those an earlier run left are older)."""
    found = []
    for path in workdir.glob("*/checkpoints/*"):
        try:
            if not path.name.isdigit() and path.stat().st_mtime >= since:
                found.append(f"{path.parent.parent.name}/{path.name}")
        except FileNotFoundError:  # committed (renamed) while we looked
            continue
    return sorted(found)


def read_json(path: Path) -> dict | None:
    """A JSON file the run may be writing this instant (None until it is whole)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def last_logged_step(metrics: Path) -> int:
    """The step of the last whole row of a metrics.jsonl the run may be appending to (0: none)."""
    rows = [read_json_line(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    rows = [row for row in rows if row is not None]
    return int(rows[-1]["step"]) if rows else 0


def read_json_line(line: str) -> dict | None:
    try:
        return json.loads(line)
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class Landing:
    """Where a kill landed, read from the workdir just after it (what the rerun finds)."""

    stage: str | None       # the stage being trained (None: before the first stage folder)
    logged_step: int        # its last logged step
    committed: list[int]    # its committed checkpoints
    num_steps: int
    interrupted_saves: list[str]

    @property
    def mid_save(self) -> bool:
        return bool(self.interrupted_saves)

    @property
    def mid_stage(self) -> bool:
        """The rerun resumes the stage from a checkpoint short of its end."""
        return bool(self.committed) and 0 < self.committed[-1] < self.num_steps

    @property
    def steps_to_replay(self) -> bool:
        """Mid-stage with a step logged past the stage's last committed checkpoint: the rerun replays it."""
        return self.mid_stage and self.logged_step > self.committed[-1]

    def __str__(self) -> str:
        if self.stage is None:
            return "start-up (no stage begun)"
        where = (f"{self.stage} after logged step {self.logged_step} of {self.num_steps} (checkpoints "
                 f"{self.committed or 'none'})")
        kinds = ([f"MID-SAVE of {', '.join(self.interrupted_saves)}"] if self.mid_save else []) + (
            [f"MID-STAGE: resumes from step {self.committed[-1]}"] if self.mid_stage else [])
        return where + "".join(f"; {kind}" for kind in kinds)


def landing(workdir: Path, since: float) -> Landing:
    """Where the run in `workdir`, started at `since` (time.time()), is: its current stage (the last of the run's
    stages with a folder), that stage's progress, and the saves it had in flight."""
    config = read_json(workdir / "config.json")  # None while a starting run rewrites it
    begun = [name for name in config["stage_order"] if (workdir / name).is_dir()] if config else []
    interrupted = saves_in_flight(workdir, since)
    if not begun:
        return Landing(None, 0, [], 0, interrupted)
    stage_dir = workdir / begun[-1]
    num_steps = int(config[begun[-1]]["num_steps"])
    return Landing(begun[-1], last_logged_step(stage_dir / "metrics.jsonl"), committed_steps(stage_dir), num_steps,
                   interrupted)


def run_to_end(command: list[str], log: Path) -> float:
    started = time.monotonic()
    with log.open("a") as output:
        done = subprocess.run(command, cwd=REPO, env=environment(), stdout=output, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}; see {log}")
    return time.monotonic() - started


def logged_rows(workdir: Path) -> int:
    """Rows in every stage's metrics.jsonl: how far a run has come (a resume first drops the rows it replays)."""
    return sum(len([line for line in path.read_text().splitlines() if line.strip()])
               for path in workdir.glob("stage*/metrics.jsonl"))


def kill_at(command: list[str], workdir: Path, target_rows: int, extra_s: float, how: str, log: Path
            ) -> Landing | None:
    """Starts the command, waits until the run has logged `target_rows` rows in all (0: no wait), then, by `how`:
    'random' waits `extra_s` more seconds (into the next step, save, compilation or stage hand-over); 'mid-save'
    waits for this run's next checkpoint save to begin; 'mid-stage' waits for a step logged past a checkpoint
    committed short of its stage's end. Then SIGKILL. Returns where the kill landed, None if the run finished first."""
    since = time.time() - 1.0  # folder times have a coarse clock on some file systems
    with log.open("a") as output:
        process = subprocess.Popen(command, cwd=REPO, env=environment(), stdout=output, stderr=subprocess.STDOUT)
        while logged_rows(workdir) < target_rows and process.poll() is None:
            time.sleep(0.05)
        if how == "mid-save":
            while process.poll() is None and not saves_in_flight(workdir, since):
                time.sleep(0.002)
        elif how == "mid-stage":
            while process.poll() is None and not landing(workdir, since).steps_to_replay:
                time.sleep(0.05)
        try:
            process.wait(timeout=extra_s if how == "random" else 0)
            return None
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            return landing(workdir, since)


def stage_results(workdir: Path) -> dict[str, tuple[dict, list[dict]]]:
    """{stage: (final parameters by name, metric rows without the timing columns)}."""
    import numpy as np
    from flax import nnx

    from embed_jax.train import trained_student, workdir as workdirs

    results = {}
    for stage_dir in workdirs.stage_folders(workdir):
        student = trained_student.load_student(stage_dir)
        params = {"/".join(map(str, path)): np.asarray(variable.get_value())
                  for path, variable in nnx.to_flat_state(nnx.state(student, nnx.Param))}
        rows = [{key: value for key, value in json.loads(line).items() if key not in TIMING_COLUMNS}
                for line in (stage_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        results[stage_dir.name] = (params, rows)
    return results


def differences(reference: dict, soaked: dict) -> list[str]:
    import numpy as np

    lines = []
    if sorted(reference) != sorted(soaked):
        return [f"stages: reference {sorted(reference)}, soaked {sorted(soaked)}"]
    for stage, (params, rows) in reference.items():
        other_params, other_rows = soaked[stage]
        for name, value in params.items():
            other = other_params.get(name)
            if other is None:
                lines.append(f"{stage} {name}: missing from the soaked run")
            elif other.dtype != value.dtype or other.tobytes() != value.tobytes():
                gap = np.max(np.abs(value.astype(np.float64) - other.astype(np.float64)))
                lines.append(f"{stage} {name}: not bit-identical (max |difference| {gap:.3g})")
        if rows != other_rows:
            lines.append(f"{stage} metrics.jsonl: steps {[row['step'] for row in other_rows]} vs reference "
                         f"{[row['step'] for row in rows]}, or values differ")
    return lines


def make_inputs(work: Path) -> tuple[str, str]:
    """A tiny random BERT student and 64 WordNet records (all-MiniLM-L6-v2), as tests/train/conftest.py makes."""
    import torch
    from transformers import BertConfig, BertModel

    from embed_jax.assets import minilm_path
    from embed_jax.teachers import export

    student = work / "tiny_student"
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                         vocab_size=30522, max_position_embeddings=64), add_pooling_layer=False).save_pretrained(student)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_path() / name, student / name)
    import importlib.util

    spec = importlib.util.spec_from_file_location("teachers_config", REPO / "configs" / "teachers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config("smoke")
    config.output_dir = str(work / "records")
    config.corpus.builtin, config.corpus.max_texts = "wordnet", 64
    del config.teachers["mpnet"]
    config.teacher_order, config.storage_dtype, config.shard_size, config.progress_every_s = "minilm", "float32", 32, 0.0
    export.run_export(config)
    return str(student), config.output_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--init_from", default="")
    parser.add_argument("--records_dir", default="")
    parser.add_argument("--teacher_dim", type=int, default=384)
    parser.add_argument("--make_inputs", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep_reference", action="store_true",
                        help="reuse the uninterrupted run a soak with the same --work and command left there")
    parser.add_argument("--min_mid_save", type=int, default=1, help="fail unless this many kills cut a save short")
    parser.add_argument("--min_mid_stage", type=int, default=1,
                        help="fail unless this many kills left a stage to resume from a checkpoint short of its end")
    arguments, extra = parser.parse_known_args()
    extra = [argument for argument in extra if argument != "--"]
    work = arguments.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    init_from, records_dir = arguments.init_from, arguments.records_dir
    if arguments.make_inputs:
        init_from, records_dir = make_inputs(work)
    if not init_from or not records_dir:
        parser.error("give --init_from and --records_dir, or --make_inputs")
    timing_file = work / "reference_timing.json"
    kept = arguments.keep_reference and timing_file.is_file()
    for name in ("soaked",) + (() if kept else ("reference",)):
        shutil.rmtree(work / name, ignore_errors=True)
    log = work / "soak.log"
    # Every rerun compiles the same steps again; jax's persistent cache hands them back (the same executables, so
    # the same bits) and leaves more of the soak's time to kills.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(work / "jax_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

    reference_command = train_command(work / "reference", init_from, records_dir, arguments.teacher_dim, extra)
    if not kept:
        timing_file.write_text(json.dumps({"reference_s": run_to_end(reference_command, log)}))
    reference_s = json.loads(timing_file.read_text())["reference_s"]
    print(f"reference run{' (kept from an earlier run of the same command)' if kept else ''}: {reference_s:.1f} s",
          flush=True)

    soaked = work / "soaked"
    command = train_command(soaked, init_from, records_dir, arguments.teacher_dim, extra)
    rng = random.Random(arguments.seed)
    total_rows = logged_rows(work / "reference")
    # Kill moments by progress, in increasing order, so that each kill lands before the run could finish: after a
    # random number of logged rows, then by turns a random part of the time one row takes (a step, a save, a
    # compilation), the start of the next save, or a time after a checkpoint short of the stage's end.
    targets = sorted(rng.randrange(total_rows) for _ in range(arguments.kills))
    landings = []
    for kill, (target, how) in enumerate(zip(targets, itertools.cycle(KILL_KINDS))):
        extra_s = rng.uniform(0, 2 * reference_s / total_rows)
        landed = kill_at(command, soaked, target, extra_s, how, log)
        print(f"kill {kill + 1}/{arguments.kills} ({how}, after row {target}): "
              f"{landed if landed else 'the run finished before its kill'}", flush=True)
        if landed:
            landings.append(landed)
    finish_s = run_to_end(command, log)
    print(f"final rerun to the end: {finish_s:.1f} s", flush=True)
    counts = {"kills": len(landings), "mid-save": sum(landed.mid_save for landed in landings),
              "mid-stage": sum(landed.mid_stage for landed in landings)}
    print(f"landed: {counts['kills']} kills, {counts['mid-save']} mid-save, {counts['mid-stage']} mid-stage",
          flush=True)
    short = [f"{name} {counts[name]} < {least}" for name, least in
             (("kills", 1), ("mid-save", arguments.min_mid_save), ("mid-stage", arguments.min_mid_stage))
             if counts[name] < least]

    found = differences(stage_results(work / "reference"), stage_results(soaked))
    for line in found:
        print(f"DIFFERENT  {line}")
    if not found:
        print(f"bit-identical: every stage's parameters and every logged value (timing columns aside) after "
              f"{counts['kills']} kill -9")
    if short:
        print(f"NOT PROVEN: too few kills landed where asked ({'; '.join(short)}); rerun with more --kills or "
              "another --seed")
    return 1 if found or short else 0


if __name__ == "__main__":
    sys.exit(main())
