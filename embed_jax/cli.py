"""The command-line style of every embed_jax program besides embed_jax/main.py: absl flags and a `main(argv)`.

A program defines its flags at import, as embed_jax/main.py does, but on a FlagValues of its own
(`FLAGS = cli.program_flags()`, then `flags.DEFINE_*(..., flag_values=FLAGS)`): several programs import side by side
(the test suite, or evaluation next to the exporter) and each may name a --workdir or an --out without clashing in
absl's global FLAGS. `main(argv)` reads argv with `parse`, from the defaults on every call, so tests call it as often
as they like; a usage error is one line on stderr.

    FLAGS = cli.program_flags()
    _OUT = flags.DEFINE_string("out", None, "Folder to write.", flag_values=FLAGS)

    def main(argv: Sequence[str] | None = None) -> int:
        try:
            cli.parse(FLAGS, argv, doc=__doc__)
            cli.require(FLAGS, ["out"])
        except cli.UsageError as error:
            return cli.fail(error)
        ...

    if __name__ == "__main__":
        sys.exit(main())
"""
from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from absl import flags

USAGE_EXIT_CODE = 2  # argparse's and the shell's convention for a command used wrongly
FAULT_EXIT_CODE = 1  # the input was fine; the machine failed the program (a full disk, a read-only mount)


class UsageError(ValueError):
    """The command line itself is wrong (an unknown or malformed flag, a missing one); the message names the flag."""


def program_flags() -> flags.FlagValues:
    """A program's own flags, holding --help (-h)."""
    flag_values = flags.FlagValues()
    flags.DEFINE_bool("help", False, "Show what the program does and its flags.", short_name="h",
                      flag_values=flag_values)
    return flag_values


def parse(flag_values: flags.FlagValues, argv: Sequence[str] | None, *, doc: str,
          positional: bool = False) -> list[str]:
    """Reads argv (without the program's name; default sys.argv[1:]) into `flag_values`, every flag starting from its
    default, and returns the arguments that are not flags; a program that takes none (`positional=False`) has them
    refused. --help prints `doc` and the flags, and exits 0."""
    argv = sys.argv[1:] if argv is None else list(argv)
    flag_values.unparse_flags()
    try:
        positional_arguments = flag_values(["program", *argv])[1:]
    except flags.Error as error:
        raise UsageError(str(error)) from None
    if flag_values["help"].value:
        print(f"{doc.strip()}\n\nflags:\n{flag_values.get_help(include_special_flags=False)}")
        raise SystemExit(0)
    if positional_arguments and not positional:
        raise UsageError(f"unrecognized arguments: {' '.join(positional_arguments)} (settings are --flag=value)")
    return positional_arguments


# absl's own --help flags exit with status 1 (absl.flags' HelpFlag); a program run through app.run asks
# `exit_on_help` first, so that asking for help succeeds as it does in the programs above.
HELP_ARGUMENTS = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def exit_on_help(argv: Sequence[str], *, doc: str) -> None:
    """For a program run through absl's app.run: --help (-h, -?, --helpshort, --helpfull) among `argv` (the program's
    name first, as sys.argv) prints `doc` and the program's flags on stdout and exits 0."""
    arguments = list(argv[1:])
    if not any(argument in HELP_ARGUMENTS for argument in arguments):
        return
    text = flags.FLAGS.get_help() if "--helpfull" in arguments else flags.FLAGS.main_module_help()
    print(f"{doc.strip()}\n\nflags:\n{text}")
    raise SystemExit(0)


def require(flag_values: flags.FlagValues, names: Sequence[str]) -> None:
    """UsageError naming every flag of `names` left without a value (None, empty)."""
    missing = [f"--{name}" for name in names if flag_values[name].value in (None, "", [])]
    if missing:
        raise UsageError(f"the following arguments are required: {', '.join(missing)}")


def fail(error: Exception | str, *, code: int = USAGE_EXIT_CODE) -> int:
    """Prints `error: ...` on stderr (one line, no traceback) and returns the exit code, for usage errors and for bad
    input the program found (each program keeps the exit code it documents)."""
    print(f"error: {error}", file=sys.stderr)
    return code


def check_output_folder(path: Path, flag: str) -> None:
    """Makes `path` (the folder `flag` names) and proves it writable, before any work: a UsageError naming the flag,
    the path and the cause otherwise (a file in the way, a read-only file system, no permission, a full disk)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--{flag}={path} is a file, not a folder; choose a folder for --{flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--{flag}={path}: {describe_os_error(error)}; choose another --{flag} or make it "
                         "writable") from None


def describe_os_error(error: OSError) -> str:
    """'cannot write PATH: CAUSE (ENAME)': an OSError met while writing, in words."""
    name = errno.errorcode.get(error.errno, "") if error.errno else ""
    cause = error.strerror or str(error)
    return f"cannot write {os.fsdecode(error.filename) if error.filename else 'a file'}: {cause}" + (
        f" ({name})" if name else "")


def write_failed(error: OSError, flag: str, folder: Path) -> str:
    """One line for a write that failed midway under the folder `flag` names: the file, the cause and what to do."""
    fix = ("free space there" if error.errno in (errno.ENOSPC, errno.EDQUOT)
           else f"make {folder} writable" if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
           else "fix that path")
    return (f"--{flag}={folder}: {describe_os_error(error)}; {fix} (or choose another --{flag}), then run the same "
            "command again")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Names `path` in an OSError raised while it is written without a file name (matplotlib's savefig and others
    write through file objects), so that `describe_os_error` can say which file failed."""
    try:
        yield
    except OSError as error:
        if error.filename:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
