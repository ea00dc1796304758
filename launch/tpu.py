"""Create a Cloud TPU VM or pod slice, install embed_jax on every worker, run one command on all of them, delete it.

    python -m launch.tpu create   --name=embed-v5e --zone=us-west4-a --accelerator-type=v5litepod-16 --spot
    python -m launch.tpu setup    --name=embed-v5e --zone=us-west4-a            # copies this checkout's HEAD
    python -m launch.tpu setup    --name=embed-v5e --zone=us-west4-a --gcsfuse-bucket=BUCKET   # + /mnt/gcs/BUCKET
    python -m launch.tpu run      --name=embed-v5e --zone=us-west4-a --log=train.log -- \\
        python -m embed_jax.main --config=configs/jasper.py --workdir=gs://BUCKET/jasper
    python -m launch.tpu delete   --name=embed-v5e --zone=us-west4-a

Add --dry-run to any of them to print the exact commands instead of running them. See docs/launch.md.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

from absl import flags

from embed_jax import cli
from launch import gcloud

REPO_ROOT = Path(__file__).resolve().parent.parent


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Options before the first `--`, the command to run on the workers after it."""
    argv = list(argv)
    if "--" in argv:
        index = argv.index("--")
        return argv[:index], argv[index + 1 :]
    return argv, []


FLAGS = cli.program_flags()
# Every action takes these; the others belong to the actions listed in ACTION_FLAGS.
COMMON_FLAGS = ("name", "zone", "project", "dry-run", "help")
ACTIONS = ("create", "setup", "run", "delete", "describe")
ACTION_FLAGS = {
    "create": ("accelerator-type", "version", "spot", "preemptible", "queued", "plan-config"),
    "setup": ("git-url", "ref", "commit", "extras", "python", "remote-dir", "gcsfuse-bucket", "mount-point"),
    "run": ("remote-dir", "env", "log", "worker"),
    "delete": ("queued", "yes"),
    "describe": (),
}
REQUIRED_FLAGS = {"create": ("name", "zone", "accelerator-type")}

flags.DEFINE_string("name", None, "TPU name (lower-case letters, digits, hyphens).", flag_values=FLAGS)
flags.DEFINE_string("zone", None, "Zone of the TPU, e.g. us-central2-b (v4), us-west4-a (v5e).", flag_values=FLAGS)
flags.DEFINE_string("project", None, "Google Cloud project (default: gcloud's configured project).",
                    flag_values=FLAGS)
flags.DEFINE_bool("dry-run", False, "Print the commands, run nothing.", flag_values=FLAGS)
# create
flags.DEFINE_string("accelerator-type", None, "create: e.g. v4-32, v5litepod-16, v5p-8, v6e-16.", flag_values=FLAGS)
flags.DEFINE_string("version", None, "create: runtime (software) version; default: the generation's JAX base image.",
                    flag_values=FLAGS)
flags.DEFINE_bool("spot", False, "create: spot capacity (can be preempted: runs save on SIGTERM).", flag_values=FLAGS)
flags.DEFINE_bool("preemptible", False, "create: legacy preemptible capacity (24 h at most).", flag_values=FLAGS)
flags.DEFINE_string("plan-config", "configs/jasper.py", "create --dry-run: also print the TPU plan of this training "
                    "config on the accelerator type (python -m embed_jax.plan: compiles every stage, minutes; needs "
                    "the package with its `plan` extra); empty: no plan.", flag_values=FLAGS)
flags.DEFINE_bool("queued", False, "create: through a queued resource (waits for capacity); delete: it was created "
                  "so.", flag_values=FLAGS)
# setup
flags.DEFINE_string("git-url", None, "setup: clone this repository on the workers instead of copying this checkout.",
                    flag_values=FLAGS)
flags.DEFINE_string("ref", "main", "setup with --git-url: branch, tag or commit to check out.", flag_values=FLAGS)
flags.DEFINE_string("commit", "HEAD", "setup without --git-url: commit of this checkout to copy.", flag_values=FLAGS)
flags.DEFINE_string("extras", "tpu", "setup: pip extras to install (default: tpu, i.e. jax[tpu]).", flag_values=FLAGS)
flags.DEFINE_string("python", "3.11", "setup: Python version of the workers' virtual env.", flag_values=FLAGS)
flags.DEFINE_string("remote-dir", "embed_jax", "setup: folder on each worker, relative to its home; run: the folder "
                    "setup installed into.", flag_values=FLAGS)
flags.DEFINE_multi_string("gcsfuse-bucket", [], "setup: also mount this bucket read-only with gcsfuse on every worker "
                          "(repeatable); records are then read from /mnt/gcs/BUCKET/... (see docs/launch.md).",
                          flag_values=FLAGS)
flags.DEFINE_string("mount-point", None, "setup with one --gcsfuse-bucket: where to mount it (default "
                    "/mnt/gcs/BUCKET).", flag_values=FLAGS)
# run
flags.DEFINE_multi_string("env", [], "run: KEY=VALUE environment for the command (repeat for several).",
                          flag_values=FLAGS)
flags.DEFINE_string("log", None, "run: detach, writing the output to this file in --remote-dir on each worker.",
                    flag_values=FLAGS)
flags.DEFINE_string("worker", "all", "run: which workers (default all; a pod needs all of them).", flag_values=FLAGS)
# delete
flags.DEFINE_bool("yes", False, "delete: do not ask for confirmation.", flag_values=FLAGS)


def parse_request(argv: Sequence[str]) -> SimpleNamespace:
    """The action and its options (flag names with _ for -), checked against what the action takes; UsageError
    names what is missing or does not belong."""
    positional = cli.parse(FLAGS, argv, doc=__doc__, positional=True)
    if not positional:
        raise cli.UsageError(f"the following arguments are required: {{{','.join(ACTIONS)}}}")
    action, extra = positional[0], positional[1:]
    if action not in ACTIONS:
        raise cli.UsageError(f"argument action: invalid choice: {action!r} (choose from "
                             f"{', '.join(map(repr, ACTIONS))})")
    names = [name for name in FLAGS if FLAGS[name].name == name]  # not the short -h
    foreign = [f"--{name}" for name in names if FLAGS[name].present and name not in COMMON_FLAGS + ACTION_FLAGS[action]]
    if extra or foreign:
        raise cli.UsageError(f"unrecognized arguments: {' '.join(foreign + extra)}")
    cli.require(FLAGS, REQUIRED_FLAGS.get(action, ("name", "zone")))
    return SimpleNamespace(action=action, **{name.replace("-", "_"): FLAGS[name].value for name in names})


def checkout_commands(options: SimpleNamespace, target: gcloud.Target) -> list[gcloud.Command]:
    """`setup` without --git-url: resolve the commit here, so the commands name exactly what is copied."""
    resolved = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--verify", f"{options.commit}^{{commit}}"],
        capture_output=True,
        text=True,
    )
    if resolved.returncode != 0:
        raise gcloud.LaunchError(
            f"--commit {options.commit!r} is not a commit of {REPO_ROOT}: {resolved.stderr.strip()} "
            "(or pass --git-url to clone on the workers instead)"
        )
    commit = resolved.stdout.strip()
    status = ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"]
    dirty = subprocess.run(status, capture_output=True, text=True).stdout
    if dirty and options.commit == "HEAD":
        print(f"note: uncommitted changes in {REPO_ROOT} are not copied; commit {commit[:12]} is.", file=sys.stderr)
    archive = str(Path(tempfile.gettempdir()) / f"embed_jax-{commit[:12]}.tar.gz")
    return gcloud.setup_from_checkout(
        target, str(REPO_ROOT), archive, options.remote_dir, options.extras, options.python, commit
    )


def refuse_control_characters(options: SimpleNamespace, command: Sequence[str]) -> None:
    """A newline (or any control character) in an option or the command would end a printed line: pasted, the rest
    of a dry run's plan would run as commands of their own. LaunchError names the first such argument."""
    values = [(f"--{name.replace('_', '-')}", value) for name, value in vars(options).items()]
    values += [("the command after --", argument) for argument in command]
    for flag, value in values:
        for item in value if isinstance(value, list) else [value]:
            found = gcloud.control_character(item) if isinstance(item, str) else None
            if found is not None:
                raise gcloud.LaunchError(f"{flag} {item!r} holds a control character ({found}): launch arguments are "
                                         "one line each; remove it")


def plan(options: SimpleNamespace, command: list[str]) -> list[gcloud.Command]:
    """The commands the request stands for; LaunchError for a request that cannot be carried out."""
    refuse_control_characters(options, command)
    if command and options.action != "run":
        raise gcloud.LaunchError(f"`{options.action}` takes no command after `--` (only `run` does)")
    target = gcloud.Target(options.name, options.zone, options.project)
    if options.action == "create":
        return gcloud.create(
            target,
            options.accelerator_type,
            options.version,
            spot=options.spot,
            preemptible=options.preemptible,
            queued=options.queued,
        )
    if options.action == "setup":
        if options.mount_point and len(options.gcsfuse_bucket) != 1:
            raise gcloud.LaunchError("--mount-point needs exactly one --gcsfuse-bucket (each bucket gets its own "
                                     "/mnt/gcs/BUCKET otherwise)")
        mounts = [gcloud.mount_bucket(target, bucket, options.mount_point) for bucket in options.gcsfuse_bucket]
        if options.git_url:
            return gcloud.setup_from_git(
                target, options.git_url, options.ref, options.remote_dir, options.extras, options.python
            ) + mounts
        return checkout_commands(options, target) + mounts
    if options.action == "run":
        env = gcloud.parse_env(options.env)
        return gcloud.run_everywhere(target, command, options.remote_dir, env, options.log, worker=options.worker)
    if options.action == "delete":
        return gcloud.delete(target, queued=options.queued, yes=options.yes)
    return gcloud.describe(target)


def plan_command(options: SimpleNamespace) -> list[str] | None:
    """`create --dry-run`'s plan: the training config compiled for the accelerator type (docs/launch.md, "The plan"),
    run with this Python from the checkout's root; None when --plan-config is empty."""
    if options.action != "create" or not options.plan_config:
        return None
    return [sys.executable, "-m", "embed_jax.plan", f"--config={options.plan_config}",
            f"--topology={options.accelerator_type}"]


def print_plan(command: list[str]) -> int:
    """Runs the plan, its output on this console; a plan that cannot run says why in one line (the dry run's commands
    are printed already)."""
    print(f"# the plan: {' '.join(command[1:])}", flush=True)
    try:
        return subprocess.run(command, cwd=REPO_ROOT).returncode
    except OSError as error:
        print(f"error: the plan did not run ({error}); install the package with its plan extra: "
              "pip install -e '.[plan]'", file=sys.stderr)
        return 1


def execute(commands: Sequence[gcloud.Command]) -> int:
    """Runs the commands in order, stopping at the first failure, which is named."""
    for number, command in enumerate(commands, start=1):
        print(f"+ {command.shell_line()}", file=sys.stderr, flush=True)
        if shutil.which(command.argv[0]) is None:
            print(
                f"error: {command.argv[0]} is not on PATH. Install the Google Cloud CLI "
                "(https://cloud.google.com/sdk/docs/install) and run `gcloud auth login`, or use --dry-run to see "
                "the commands.",
                file=sys.stderr,
            )
            return 127
        returncode = subprocess.run(command.argv).returncode
        if returncode != 0:
            failed = f"step {number} of {len(commands)} ({command.purpose})"
            print(f"error: {failed} exited with status {returncode}", file=sys.stderr)
            return returncode
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options_argv, command = split_command(sys.argv[1:] if argv is None else argv)
    try:
        options = parse_request(options_argv)
        commands = plan(options, command)
    except (cli.UsageError, gcloud.LaunchError) as error:
        return cli.fail(error)  # status 2, like a missing argument
    if options.dry_run:
        for command_step in commands:
            print(command_step.comment_line())
            print(command_step.shell_line())
        planning = plan_command(options)
        return 0 if planning is None else print_plan(planning)
    return execute(commands)


if __name__ == "__main__":
    sys.exit(main())
