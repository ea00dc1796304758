"""The entry point as a user runs it: SIGTERM (TPU preemption) saves at a step boundary and exits 0; the same command
then resumes from that step; a missing --workdir is a usage error."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main_command(workdir, tiny_student, teacher_records, *extra):
    return [sys.executable, "-m", "embed_jax.main", "--config=configs/distill.py:smoke", f"--workdir={workdir}",
            f"--config.model.init_from={tiny_student}", "--config.model.teacher_dim=384",
            f"--config.data.records_dir={teacher_records}", "--config.stage_order=('stage1',)",
            "--config.train.checkpoint_every=1000", *extra]


def logged_steps(workdir) -> list[int]:
    path = Path(workdir) / "stage1" / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def test_sigterm_saves_and_the_same_command_resumes(tiny_student, teacher_records, tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    command = main_command(tmp_path, tiny_student, teacher_records, "--config.stage1.num_steps=100000")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while len(logged_steps(tmp_path)) < 3 and time.time() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert process.poll() is None, process.communicate()[0][-3000:]
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 0, output[-3000:]
    assert "stop requested (SIGTERM)" in output
    saved = sorted(int(p.name) for p in (tmp_path / "stage1" / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] >= 3  # saved off the 1000-step interval, at the step it stopped

    resumed = subprocess.run(main_command(tmp_path, tiny_student, teacher_records,
                                          f"--config.stage1.num_steps={saved[-1] + 2}"),
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resumed from step {saved[-1]}" in resumed.stdout + resumed.stderr
    assert logged_steps(tmp_path)[-1] == saved[-1] + 2


def test_missing_workdir_is_a_usage_error():
    done = subprocess.run([sys.executable, "-m", "embed_jax.main", "--config=configs/distill.py:smoke"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "--workdir is required" in done.stderr
