r"""Kill/resume soak of training: N random `kill -9` of `python -m embed_jax.main`, then a bit-for-bit comparison of
every stage's final parameters and logged metrics against an uninterrupted run of the same command.

    python scripts/kill_resume_soak.py --kills=5 --work=/tmp/soak \
        --init_from=FOLDER --records_dir=RECORDS [--seed=0] [-- --config.key=value ...]

    --init_from / --records_dir   the student's init folder and the teacher records (e.g. configs/distill.py's
                                  asset:all-MiniLM-L6-v2 and runs/default/records, or a tiny student: --make_inputs)
    --make_inputs                 build a tiny random BERT student (MiniLM's tokenizer) and 64 WordNet records with
                                  all-MiniLM-L6-v2 under --work first, as tests/train/conftest.py does (needs torch)

The command is configs/distill.py:smoke with log_every=1 (a resumed run logs its first step, so only a row per step
compares with an uninterrupted run), checkpoint_every=2 and 6 steps per stage, plus any overrides after `--`.
Each kill lands after a random number of logged rows (drawn over the reference run's rows, in increasing order, so
that each kill comes before the run could finish) plus a random part of the time a row takes, so kills fall in
start-up, compilation, steps, checkpoint saves and stage hand-overs alike; after the N kills the command is rerun
to the end. Timing columns (examples_per_s, tokens_per_s, steps_per_s) are left out of the comparison. Exit status 0
when everything is bit-identical; the report says where each kill landed (docs/reliability.md has the last result).
"""
from __future__ import annotations

import argparse
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
SOAK_OVERRIDES = ("--config.train.log_every=1", "--config.train.checkpoint_every=2", "--config.stage1.num_steps=6",
                  "--config.stage2.num_steps=6", "--config.stage3_heads.num_steps=6", "--config.stage3.num_steps=6")


def train_command(workdir: Path, init_from: str, records_dir: str, teacher_dim: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "embed_jax.main", "--config=configs/distill.py:smoke", f"--workdir={workdir}",
            f"--config.model.init_from={init_from}", f"--config.model.teacher_dim={teacher_dim}",
            "--config.data.teacher_weights=",
            "--config.model.reduction_dims=(16,)", "--config.stage2.last_layers=2",
            f"--config.data.records_dir={records_dir}", *SOAK_OVERRIDES, *extra]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def progress(workdir: Path) -> str:
    """Where a run is: the last logged step of the last stage folder with metrics (what a kill interrupted)."""
    stages = sorted(path for path in workdir.glob("stage*") if (path / "metrics.jsonl").is_file())
    if not stages:
        return "start-up (no step logged)"
    lines = [line for line in (stages[-1] / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = json.loads(lines[-1])["step"] if lines else 0
    saved = sorted(int(path.name) for path in (stages[-1] / "checkpoints").glob("[0-9]*")) if (
        stages[-1] / "checkpoints").is_dir() else []
    return f"{stages[-1].name} after logged step {last} (checkpoints {saved or 'none'})"


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


def kill_at(command: list[str], workdir: Path, target_rows: int, extra_s: float, log: Path) -> str:
    """Starts the command, waits until the run has logged `target_rows` rows in all (0: no wait), then `extra_s`
    more seconds (into the next step, save, compilation or stage hand-over), and sends SIGKILL."""
    with log.open("a") as output:
        process = subprocess.Popen(command, cwd=REPO, env=environment(), stdout=output, stderr=subprocess.STDOUT)
        while logged_rows(workdir) < target_rows and process.poll() is None:
            time.sleep(0.05)
        try:
            process.wait(timeout=extra_s)
            return f"finished before the kill (exit {process.returncode})"
        except subprocess.TimeoutExpired:
            where = progress(workdir)
            process.send_signal(signal.SIGKILL)
            process.wait()
            return f"killed {extra_s:.1f} s after row {target_rows}: {where}"


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
    arguments, extra = parser.parse_known_args()
    extra = [argument for argument in extra if argument != "--"]
    work = arguments.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    init_from, records_dir = arguments.init_from, arguments.records_dir
    if arguments.make_inputs:
        init_from, records_dir = make_inputs(work)
    if not init_from or not records_dir:
        parser.error("give --init_from and --records_dir, or --make_inputs")
    for name in ("reference", "soaked"):
        shutil.rmtree(work / name, ignore_errors=True)
    log = work / "soak.log"

    reference_command = train_command(work / "reference", init_from, records_dir, arguments.teacher_dim, extra)
    reference_s = run_to_end(reference_command, log)
    print(f"reference run: {reference_s:.1f} s", flush=True)

    soaked = work / "soaked"
    command = train_command(soaked, init_from, records_dir, arguments.teacher_dim, extra)
    rng = random.Random(arguments.seed)
    total_rows = logged_rows(work / "reference")
    # Kill moments by progress, in increasing order, so that each kill lands before the run could finish: after a
    # random number of logged rows, then a random part of the time one row takes (a step, a save, a compilation).
    targets = sorted(rng.randrange(total_rows) for _ in range(arguments.kills))
    for kill, target in enumerate(targets):
        extra_s = rng.uniform(0, 2 * reference_s / total_rows)
        print(f"kill {kill + 1}/{arguments.kills}: {kill_at(command, soaked, target, extra_s, log)}", flush=True)
    finish_s = run_to_end(command, log)
    print(f"final rerun to the end: {finish_s:.1f} s", flush=True)

    found = differences(stage_results(work / "reference"), stage_results(soaked))
    for line in found:
        print(f"DIFFERENT  {line}")
    if not found:
        print(f"bit-identical: every stage's parameters and every logged value (timing columns aside) after "
              f"{arguments.kills} kill -9")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
