"""python -m embed_jax.main --config=configs/distill.py --workdir=DIR [--config.key=value ...]

The same command on one CPU, one GPU, or every worker of a TPU pod slice (launch/ runs it on all workers). Several
processes are joined with `jax.distributed.initialize()`: on a TPU slice it finds its peers by itself; elsewhere pass
--coordinator_address, --num_processes and --process_id (e.g. two processes on one machine, as the tests do).
Re-running the same command on the same workdir resumes from the latest checkpoint of the unfinished stage.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (a get_config() module).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics, TensorBoard and plots.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs "
                                   "outside a TPU slice.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", None, "Force jax.distributed.initialize() (default: when the "
                                 "flags above are given or a TPU pod slice is detected).")


def wants_distributed() -> bool:
    if _DISTRIBUTED.value is not None:
        return _DISTRIBUTED.value
    if _COORDINATOR.value or _NUM_PROCESSES.value:
        return True
    # A multi-host TPU slice: the TPU runtime sets the worker list; jax.distributed reads it by itself.
    hostnames = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return "," in hostnames


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; settings go in --config.key=value")
    if _WORKDIR.value is None:
        raise app.UsageError("--workdir is required: the folder for checkpoints and metrics (reused to resume)")
    if not flags.FLAGS["verbosity"].present:
        # Orbax and jax log every checkpoint step at INFO through absl; the progress bar says what matters.
        # --verbosity=0 brings those lines back.
        absl_logging.set_verbosity(absl_logging.WARNING)
    import jax

    if wants_distributed():
        # CPU processes need a collectives backend to exchange arrays (TPU and GPU bring their own; this setting
        # only concerns the CPU client).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)
    from embed_jax.train import driver, loop

    try:
        loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except driver.Preempted as stopped:
        print(f"[main] {stopped}; checkpoint saved, rerun the same command to resume", file=sys.stderr)
    return 0


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
