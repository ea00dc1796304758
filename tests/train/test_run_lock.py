"""One training run per workdir: a second one is refused naming the holder, and a kill -9 strands nothing
(embed_jax/train/run_lock.py). Two real processes, since flock is per open file, held by the kernel."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from embed_jax.train import run_lock

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from pathlib import Path
from embed_jax.train import run_lock
with run_lock.hold(Path(sys.argv[1]), 0):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_second_run_is_refused_naming_the_holder_and_a_kill_9_frees_the_workdir(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(run_lock.WorkdirInUseError, match=rf"--workdir={tmp_path} is in use by another training "
                                                             rf"run \(host \S+, pid {holder.pid}, started \S+, "
                                                             r"command: -c"):
            with run_lock.hold(tmp_path, 0):
                pass
        with run_lock.hold(tmp_path, 1):  # another process index of a multi-host run has a file of its own
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    with run_lock.hold(tmp_path, 0) as path:  # the kernel released the dead holder's lock
        assert path == run_lock.lock_path(tmp_path, 0)


def test_cloud_storage_workdir_takes_no_lock():
    with run_lock.hold("gs://bucket/run") as path:
        assert path is None
