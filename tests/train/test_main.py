"""The entry point as a user runs it: SIGTERM (TPU preemption) and Ctrl-C save at a step boundary and exit 143 / 130
(a finished run exits 0); the same command then resumes from that step; a kill -9 loses only the steps since the
last checkpoint, which the resumed run logs once; bad flags and config values are one line, exit 2."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kit
import xla_env

REPO = Path(__file__).resolve().parents[2]


def main_command(workdir, tiny_student, teacher_records, *extra):
    return [sys.executable, "-m", "embed_jax.main", "--config=configs/distill.py:smoke", f"--workdir={workdir}",
            f"--config.model.init_from={tiny_student}", "--config.model.teacher_dim=384",
            "--config.data.teacher_weights=",
            f"--config.data.records_dir={teacher_records}", "--config.stage_order=('stage1',)",
            "--config.stage1.kind=records",  # the text stage's step loop, killed and resumed
            "--config.stage1.fc1_init=",  # a records stage starts FC1 at random
            "--config.train.checkpoint_every=1000", *extra]


def logged_steps(workdir) -> list[int]:
    path = Path(workdir) / "stage1" / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_sigterm_saves_and_the_same_command_resumes(tiny_student, teacher_records, tmp_path):
    env = {**os.environ, "XLA_FLAGS": xla_env.xla_flags(1)}
    command = main_command(tmp_path, tiny_student, teacher_records, "--config.stage1.num_steps=100000")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while len(logged_steps(tmp_path)) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert process.poll() is None, process.communicate()[0][-3000:]
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 143, output[-3000:]  # 128 + SIGTERM: preempted, not finished (docs/training.md)
    assert "stop requested (SIGTERM)" in output
    saved = sorted(int(p.name) for p in (tmp_path / "stage1" / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] >= 3  # saved off the 1000-step interval, at the step it stopped

    resumed = subprocess.run(main_command(tmp_path, tiny_student, teacher_records,
                                          f"--config.stage1.num_steps={saved[-1] + 2}"),
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from step {saved[-1]}" in resumed.stdout + resumed.stderr
    assert logged_steps(tmp_path)[-1] == saved[-1] + 2


@pytest.mark.slow
def test_missing_workdir_is_a_usage_error():
    done = subprocess.run([sys.executable, "-m", "embed_jax.main", "--config=configs/distill.py:smoke"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--workdir is required" in done.stderr


def finished_checkpoints(stage_dir: Path) -> list[str]:
    folder = stage_dir / "checkpoints"
    return [path.name for path in folder.iterdir() if path.name.isdigit()] if folder.is_dir() else []


def start_and_wait_for_rows(command, workdir, rows: int, env):
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while len(logged_steps(workdir)) < rows and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()[0][-3000:]
    return process


@pytest.mark.slow
def test_ctrl_c_saves_like_sigterm_and_exits_130(tiny_student, teacher_records, tmp_path):
    env = {**os.environ, "XLA_FLAGS": xla_env.xla_flags(1)}
    process = start_and_wait_for_rows(main_command(tmp_path, tiny_student, teacher_records,
                                                   "--config.stage1.num_steps=100000"), tmp_path, 2, env)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output[-3000:]
    assert "stop requested (SIGINT)" in output and "Traceback" not in output
    assert (tmp_path / "stage1" / "checkpoints").is_dir() and any(
        p.name.isdigit() for p in (tmp_path / "stage1" / "checkpoints").iterdir())


@pytest.mark.slow
def test_kill_9_then_the_same_command_logs_each_step_once(tiny_student, teacher_records, tmp_path):
    """kill -9 (no handler runs) after a checkpoint and a few more logged steps: the rerun is not refused by the
    dead run's lock, resumes from the checkpoint, and metrics.jsonl holds every step exactly once."""
    env = {**os.environ, "XLA_FLAGS": xla_env.xla_flags(1)}
    command = main_command(tmp_path, tiny_student, teacher_records, "--config.stage1.num_steps=100000",
                           "--config.train.checkpoint_every=3")
    process = start_and_wait_for_rows(command, tmp_path, 5, env)
    # The step-3 save is asynchronous: kill only once it is finished (a busy machine can take longer than 2 steps).
    deadline = time.time() + 120
    while not finished_checkpoints(tmp_path / "stage1") and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    killed_at = logged_steps(tmp_path)[-1]
    resumed = subprocess.run(main_command(tmp_path, tiny_student, teacher_records,
                                          f"--config.stage1.num_steps={killed_at + 2}",
                                          "--config.train.checkpoint_every=3"),
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stdout + resumed.stderr
    assert logged_steps(tmp_path) == list(range(1, killed_at + 3))


def run_main(*arguments):
    return subprocess.run([sys.executable, "-m", "embed_jax.main", "--config=configs/distill.py:smoke", *arguments],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_typo_in_an_override_key_is_one_line_naming_the_closest_key(tmp_path):
    done = run_main(f"--workdir={tmp_path}", "--config.train.lrr=1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --config.train.lrr: the config has no key 'train.lrr'; the closest valid key is 'train.log_every' "
        "(train holds checkpoint_every, eval_batches, eval_every, keep_checkpoints, log_every)"]
    done = run_main(f"--workdir={tmp_path}", "--config.stage1.learnig_rate=1")
    assert "the closest valid key is 'stage1.learning_rate'" in done.stderr and done.returncode == 2


@pytest.mark.slow
def test_a_bad_config_value_is_one_line_before_any_work(tmp_path):
    done = run_main(f"--workdir={tmp_path / 'run'}", "--config.train.log_every=0")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: config key train.log_every=0")
    assert not (tmp_path / "run").exists()  # refused before the workdir was made


@pytest.mark.slow
def test_validation_records_repeating_the_training_records_are_refused_before_any_work(
        tmp_path, tiny_student, teacher_records, overlapping_eval_records):
    done = subprocess.run(main_command(tmp_path / "run", tiny_student, teacher_records,
                                       f"--config.data.eval_records_dir={overlapping_eval_records}",
                                       "--config.train.eval_every=1"),
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: config key data.eval_records_dir: 16 of the 16 records in "
                            f"{overlapping_eval_records} repeat records")
    assert f"training records in {teacher_records}" in error and "e.g. 'wordnet:" in error
    assert "--config.corpus.skip_texts" in error
    assert not (tmp_path / "run").exists()  # refused before the workdir was made


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB file system: the tiny student's first checkpoint (its 30,522 × 32 word embeddings alone are 3.9 MB
    in float32) does not fit, so the disk fills up inside Orbax's save, in tensorstore's writes."""
    with kit.mounted_tmpfs(tmp_path / "small_disk", "size=2M") as folder:
        yield folder


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_exit_1(tiny_student, teacher_records, small_disk):
    done = subprocess.run(main_command(small_disk / "run", tiny_student, teacher_records), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "orbax" not in done.stderr.replace(".orbax-checkpoint-tmp", ""), done.stderr[-3000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: cannot write {small_disk / 'run' / 'stage1' / 'checkpoints'}/"), error
    assert error.endswith(": No space left on device (ENOSPC); the disk is full: free space there, then rerun the same "
                          "command (it resumes from the last committed checkpoint)"), error


@pytest.mark.slow
def test_a_tuple_key_given_twice_is_refused_not_joined(tmp_path):
    """ml_collections joins a repeated tuple override: '(16,)' then '(32,)' would train with (16, 32)."""
    done = run_main(f"--workdir={tmp_path / 'run'}", "--config.data.length_buckets=(16,)",
                    "--config.data.length_buckets=(32,)")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        "error: --config.data.length_buckets is given 2 times ('(16,)', '(32,)'): ml_collections would join them "
        "into one tuple, not keep the last; give it once with the whole tuple, e.g. "
        "--config.data.length_buckets='(32,)'"]
    assert not (tmp_path / "run").exists()
