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

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from launch import gcloud

REPO_ROOT = Path(__file__).resolve().parent.parent


def split_command(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Options before the first `--`, the command to run on the workers after it."""
    argv = list(argv)
    if "--" in argv:
        index = argv.index("--")
        return argv[:index], argv[index + 1 :]
    return argv, []


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", required=True, help="TPU name (lower-case letters, digits, hyphens)")
    common.add_argument("--zone", required=True, help="zone of the TPU, e.g. us-central2-b (v4), us-west4-a (v5e)")
    common.add_argument("--project", help="Google Cloud project (default: gcloud's configured project)")
    # Accepted before or after the action; SUPPRESS keeps the subparser from resetting a value given before it.
    dry_run_help = "print the commands, run nothing"
    common.add_argument("--dry-run", action="store_true", default=argparse.SUPPRESS, help=dry_run_help)

    parser = argparse.ArgumentParser(prog="python -m launch.tpu", description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    actions = parser.add_subparsers(dest="action", required=True, metavar="{create,setup,run,delete,describe}")

    create = actions.add_parser("create", parents=[common], help="create the TPU VM or pod slice")
    create.add_argument("--accelerator-type", required=True, help="e.g. v4-32, v5litepod-16, v5p-8, v6e-16")
    create.add_argument("--version", help="runtime (software) version; default: the generation's JAX base image")
    create.add_argument("--spot", action="store_true", help="spot capacity (can be preempted: runs save on SIGTERM)")
    create.add_argument("--preemptible", action="store_true", help="legacy preemptible capacity (24 h at most)")
    create.add_argument("--queued", action="store_true", help="create through a queued resource (waits for capacity)")

    setup = actions.add_parser("setup", parents=[common], help="install the package on every worker")
    setup.add_argument("--git-url", help="clone this repository on the workers instead of copying this checkout")
    setup.add_argument("--ref", default="main", help="with --git-url: branch, tag or commit to check out")
    setup.add_argument("--commit", default="HEAD", help="without --git-url: commit of this checkout to copy")
    setup.add_argument("--extras", default="tpu", help="pip extras to install (default: tpu, i.e. jax[tpu])")
    setup.add_argument("--python", default="3.11", help="Python version of the workers' virtual env")
    setup.add_argument("--remote-dir", default="embed_jax", help="folder on each worker, relative to its home")
    setup.add_argument("--gcsfuse-bucket", action="append", default=[], metavar="BUCKET",
                       help="also mount this bucket read-only with gcsfuse on every worker (repeatable); records "
                            "are then read from /mnt/gcs/BUCKET/... (see docs/launch.md)")
    setup.add_argument("--mount-point", help="with one --gcsfuse-bucket: where to mount it (default /mnt/gcs/BUCKET)")

    run = actions.add_parser("run", parents=[common], help="run the command after -- on every worker")
    run.add_argument("--remote-dir", default="embed_jax", help="folder `setup` installed into")
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="environment for the command")
    run.add_argument("--log", help="detach: write the output to this file in --remote-dir on each worker")
    run.add_argument("--worker", default="all", help="which workers (default all; a pod needs all of them)")

    delete = actions.add_parser("delete", parents=[common], help="delete the TPU")
    delete.add_argument("--queued", action="store_true", help="it was created with --queued")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    actions.add_parser("describe", parents=[common], help="show the TPU's state and workers")
    return parser


def checkout_commands(options: argparse.Namespace, target: gcloud.Target) -> list[gcloud.Command]:
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


def plan(options: argparse.Namespace, command: list[str]) -> list[gcloud.Command]:
    """The commands the request stands for; LaunchError for a request that cannot be carried out."""
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
    parser = build_parser()
    options = parser.parse_args(options_argv)
    try:
        commands = plan(options, command)
    except gcloud.LaunchError as error:
        parser.error(str(error))  # exits with status 2, like a missing argument
    if options.dry_run:
        for command_step in commands:
            print(f"# {command_step.purpose}")
            print(command_step.shell_line())
        return 0
    return execute(commands)


if __name__ == "__main__":
    sys.exit(main())
