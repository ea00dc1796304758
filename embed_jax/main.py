"""python -m embed_jax.main --config=configs/distill.py --workdir=DIR [--config.key=value ...]

The same command on one CPU, one GPU, or every worker of a TPU pod slice (launch/ runs it on all workers). Several
processes are joined with `jax.distributed.initialize()`: on a TPU slice it finds its peers by itself; elsewhere pass
--coordinator_address, --num_processes and --process_id (e.g. two processes on one machine, as the tests do).
Re-running the same command on the same workdir resumes from the latest checkpoint of the unfinished stage.
Exit status: 0 finished, 1 a fault while training, 2 bad input, 143 / 130 stopped by SIGTERM / Ctrl-C after saving
(embed_jax/train/exits.py; docs/training.md).
"""
from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Sequence

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from embed_jax import cli
from embed_jax.train import exits

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (a get_config() module).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for checkpoints, metrics, TensorBoard and plots.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs "
                                   "outside a TPU slice.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
_TRACEBACK = flags.DEFINE_bool("traceback", False, "Show the stack of a refusal or fault, not just its one line.")
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


def raised_in_orbax(record: logging.LogRecord) -> bool:
    """Whether a log record carries an error raised inside Orbax: asyncio's "Task exception was never retrieved"
    for a failed background write is logged from asyncio's own file, with Orbax's frames in its traceback."""
    if record.exc_info is None or record.exc_info[2] is None:
        return False
    return any(f"{os.sep}orbax{os.sep}" in frame.filename for frame in traceback.extract_tb(record.exc_info[2]))


def not_an_orbax_error(record: logging.LogRecord) -> bool:
    """A logging filter: False for Orbax's ERROR records and for errors raised inside Orbax (see `main`)."""
    if record.levelno < logging.ERROR:
        return True
    return f"{os.sep}orbax{os.sep}" not in record.pathname and not raised_in_orbax(record)


def a_write_after_orbax_stopped(unraisable) -> bool:
    """Whether an error Python could not raise (sys.unraisablehook's argument) is tensorstore's callback for a write
    that finished after Orbax's save had already failed and closed its event loop: asyncio's "Event loop is closed",
    raised in `call_soon_threadsafe`."""
    frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback is not None else []
    return (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
            and any(frame.name == "call_soon_threadsafe" for frame in frames))


def quiet_writes_after_a_failed_save(hook=sys.unraisablehook):
    """A sys.unraisablehook that drops `a_write_after_orbax_stopped` and passes everything else to `hook`:
    tensorstore reports one traceback per write still in flight when a save fails (seen on a full disk), while the
    main thread re-raises the failure itself and the run ends with one line naming it (train/exits.py)."""
    def unraisablehook(unraisable):
        if not a_write_after_orbax_stopped(unraisable):
            hook(unraisable)
    return unraisablehook


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; settings go in --config.key=value")
    if _WORKDIR.value is None:
        raise app.UsageError("--workdir is required: the folder for checkpoints and metrics (reused to resume)")
    if not flags.FLAGS["verbosity"].present:
        # Orbax and jax log every checkpoint step at INFO through absl; the progress bar says what matters.
        # --verbosity=0 brings those lines back.
        absl_logging.set_verbosity(absl_logging.WARNING)
        # Orbax logs each failure of a background save with its stack (hundreds of lines for one full disk) before
        # the main thread re-raises it, and the run then ends with one line naming it (train/exits.py).
        # On the handler, not the absl logger: asyncio logs the same failure through its own logger, and both reach
        # stderr through this one handler.
        absl_logging.get_absl_handler().addFilter(not_an_orbax_error)
        sys.unraisablehook = quiet_writes_after_a_failed_save()
        # The writes a failed save left unstarted are garbage-collected at exit, each with this warning.
        warnings.filterwarnings("ignore", message="coroutine 'async_serialize_from_host", category=RuntimeWarning)
    import jax

    if wants_distributed():
        # CPU processes need a collectives backend to exchange arrays (TPU and GPU bring their own; this setting
        # only concerns the CPU client).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                                   process_id=_PROCESS_ID.value)
    return exits.run(_CONFIG.value, _WORKDIR.value, show_traceback=_TRACEBACK.value)


# ---------------------------------------------------------------------------------------------------- overrides


def config_keys(config, prefix: str = "") -> list[str]:
    """Every dotted key of a config ('train.log_every', 'model.vision.tower', ...), sections included."""
    keys = []
    for name, value in config.items():
        keys.append(prefix + name)
        if hasattr(value, "items") and not isinstance(value, (str, bytes)):
            keys.extend(config_keys(value, f"{prefix}{name}."))
    return keys


def load_config_argument(argument: str):
    """The config a --config=FILE[:ARG] names, loaded as ml_collections' flag does (FILE's get_config(ARG))."""
    path, _, arg = argument.partition(":")
    spec = importlib.util.spec_from_file_location("embed_jax_config_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def unknown_override(argv: Sequence[str], config) -> str | None:
    """'--config.KEY: no such key; the closest is ...' for the first override whose key the config lacks."""
    keys = config_keys(config)
    for argument in argv:
        if not argument.startswith("--config."):
            continue
        key = argument[len("--config."):].split("=", 1)[0]
        if key in keys:
            continue
        sections = {name.rpartition(".")[0] for name in keys}
        closest = difflib.get_close_matches(key, [name for name in keys if name not in sections], n=1, cutoff=0.0)
        section = key.rpartition(".")[0]
        siblings = sorted(name.rpartition(".")[2] for name in keys if name.rpartition(".")[0] == section
                          and name != section)
        return (f"--config.{key}: the config has no key {key!r}; the closest valid key is "
                f"{closest[0] if closest else '(none)'!r}" + (f" ({section} holds {', '.join(siblings)})"
                                                              if section in keys else ""))
    return None


def config_value(config, key: str):
    """The value at a dotted key of a config (None where there is none)."""
    for name in key.split("."):
        if not hasattr(config, "items") or name not in config:
            return None
        config = config[name]
    return config


def repeated_tuple_override(argv: Sequence[str], config) -> str | None:
    """'--config.KEY is given N times ...' for a tuple key given more than once. ml_collections makes a tuple
    override a multi-flag and joins the values ('(16,)' then '(32,)' trains with (16, 32)), where a repeated
    override is read everywhere else as the last one winning: neither is guessed, the key must be given once."""
    given: dict[str, list[str]] = {}
    for argument in argv:
        if argument.startswith("--config.") and "=" in argument:
            key, _, value = argument[len("--config."):].partition("=")
            given.setdefault(key, []).append(value)
    for key, values in given.items():
        if len(values) > 1 and isinstance(config_value(config, key), tuple):
            return (f"--config.{key} is given {len(values)} times ({', '.join(map(repr, values))}): ml_collections "
                    f"would join them into one tuple, not keep the last; give it once with the whole tuple, e.g. "
                    f"--config.{key}={values[-1]!r}")
    return None


def config_argument_of(argv: Sequence[str]) -> str | None:
    return next((argument.split("=", 1)[1] for argument in argv if argument.startswith("--config=")), None)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl's parsing, with a typo'd --config.KEY (which ml_collections reports with a long traceback that does not
    name it) turned into one line naming the key and the closest valid one, and a tuple key given twice refused
    (`repeated_tuple_override`)."""
    keys = [argument.split("=", 1)[0] for argument in argv if argument.startswith("--config.")]
    if len(keys) != len(set(keys)) and config_argument_of(argv) is not None:
        message = repeated_tuple_override(argv, load_config_argument(config_argument_of(argv)))
        if message is not None:
            print(f"error: {message}", file=sys.stderr)
            sys.exit(exits.BAD_INPUT)
    try:
        return flags.FLAGS(list(argv))
    except flags.Error as error:
        print(f"error: {error}", file=sys.stderr)
    except (AttributeError, KeyError) as error:
        config_argument = config_argument_of(argv)
        message = None
        if config_argument is not None:
            message = unknown_override(argv, load_config_argument(config_argument))
        print(f"error: {message or error}", file=sys.stderr)
    sys.exit(exits.BAD_INPUT)


if __name__ == "__main__":
    cli.exit_on_help(sys.argv, doc=__doc__)
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=parse_flags)
