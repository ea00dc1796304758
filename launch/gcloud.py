"""The gcloud commands that create a TPU VM or pod slice, install embed_jax on every worker, run on all, and delete.

Each function returns argv lists (never one shell string) so that nothing is parsed twice on this side; the only
shell that sees user text is the workers' bash, which receives `--command=` built with `shlex` quoting. Pure
functions: `launch/tpu.py` decides whether to print them (--dry-run) or run them.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
import unicodedata
from collections.abc import Sequence

# Runtime ("software version") per TPU generation for JAX, from Cloud TPU's "TPU software versions" page: the
# generation's base image; jax[tpu] itself comes from pip, pinned by the package.
RUNTIME_BY_GENERATION = {
    "v2": "tpu-ubuntu2204-base",
    "v3": "tpu-ubuntu2204-base",
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
ACCELERATOR_TYPE = re.compile(r"^(?P<generation>v[0-9][a-z]*)-(?P<size>[0-9]+)$")
# Google Cloud resource names: lower-case letters, digits and hyphens, starting with a letter, at most 63 long.
RESOURCE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
ARCHIVE_ON_WORKER = "embed_jax.tar.gz"
# uv provides Python >= 3.11 (pyproject's floor) on images whose system Python is older (Ubuntu 22.04 has 3.10).
# Where a worker has none, a pinned uv comes from the package index as a wheel (pip checks it against the index's
# hash), not from a web script piped into sh. 0.13.8: the newest release on the index when this was pinned; its
# `uv venv --allow-existing` and `uv pip install --python` are what install_command runs (checked with that wheel).
# PIP_BREAK_SYSTEM_PACKAGES lets a --user install through on images whose Python is marked externally managed
# (Ubuntu 24.04); older pips ignore the variable. Braced so that inside an `&&` chain the `||` cannot swallow an
# earlier failure.
UV_VERSION = "0.13.8"
INSTALL_UV = ("{ command -v uv >/dev/null || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --quiet "
              f"uv=={UV_VERSION}; }}")

# Cloud Storage bucket names: lower-case letters, digits, dots, hyphens and underscores, 3 to 63 long (dotted names
# up to 222), starting and ending with a letter or digit.
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
# gcsfuse from Google's apt repository, as Cloud Storage FUSE's install page gives it (Debian/Ubuntu images).
INSTALL_GCSFUSE = (
    "{ command -v gcsfuse >/dev/null || { "
    'echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt '
    'gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && '
    "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc "
    ">/dev/null && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }; }"
)
# Read-only, with metadata caches that never expire: exported records never change once written (MaxText mounts its
# grain data the same way, tools/setup/setup_gcsfuse.sh). Training reads records only; checkpoints go to gs:// by
# Orbax directly.
GCSFUSE_OPTIONS = ("-o", "ro", "--implicit-dirs", "--type-cache-max-size-mb=-1", "--stat-cache-max-size-mb=-1",
                   "--kernel-list-cache-ttl-secs=-1", "--metadata-cache-ttl-secs=-1")
DEFAULT_MOUNT_ROOT = "/mnt/gcs"  # embed_jax.data.records.GCSFUSE_MOUNT_ROOT: the path its gs:// error suggests

# Versions only: touching the TPU here would hold it, and on a slice would wait for every worker.
VERSION_CHECK = 'import embed_jax, jax; print("embed_jax", embed_jax.__version__, "jax", jax.__version__)'


class LaunchError(ValueError):
    """A launch request that cannot be turned into commands; the message says which option to fix."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Which TPU the commands address."""

    name: str
    zone: str
    project: str | None = None

    def __post_init__(self):
        if not RESOURCE_NAME.match(self.name):
            raise LaunchError(
                f"--name {self.name!r} is not a valid TPU name: use lower-case letters, digits and hyphens, starting "
                "with a letter and not ending with a hyphen, at most 63 characters (e.g. embed-jax-v5e)"
            )
        if not self.zone:
            raise LaunchError("--zone is empty: give the zone of the TPU, e.g. --zone=us-central2-b")

    def location_flags(self) -> list[str]:
        flags = [f"--zone={self.zone}"]
        if self.project:
            flags.append(f"--project={self.project}")
        return flags


@dataclasses.dataclass(frozen=True)
class Command:
    """One step: what it does, and the argv that does it."""

    purpose: str
    argv: list[str]

    def shell_line(self) -> str:
        """The argv as one line a POSIX shell parses back into the same argv."""
        return shlex.join(self.argv)

    def comment_line(self) -> str:
        """The purpose as one shell comment line: its user values are quoted where it is made, and a control
        character (refused in every launch argument: `control_character`) could not end the comment anyway."""
        return "# " + "".join(character if character.isprintable() else ascii(character)[1:-1]
                              for character in self.purpose)


def control_character(value: str) -> str | None:
    """The first control character in `value` (a newline, a carriage return, an escape...), as Python writes it."""
    found = next((character for character in value if unicodedata.category(character) == "Cc"), None)
    return None if found is None else ascii(found)[1:-1]


def runtime_version(accelerator_type: str, version: str | None) -> str:
    """The runtime to create `accelerator_type` with: `version` if given, else the generation's JAX base image."""
    match = ACCELERATOR_TYPE.match(accelerator_type)
    if not match:
        raise LaunchError(
            f"--accelerator-type {accelerator_type!r} is not of the form GENERATION-SIZE (e.g. v4-32, v5litepod-16, "
            "v5p-8, v6e-16)"
        )
    if version:
        return version
    generation = match["generation"]
    if generation not in RUNTIME_BY_GENERATION:
        raise LaunchError(
            f"no default runtime for TPU generation {generation!r} (from --accelerator-type {accelerator_type}); "
            f"known: {', '.join(sorted(RUNTIME_BY_GENERATION))}. Pass --version=RUNTIME_VERSION explicitly."
        )
    return RUNTIME_BY_GENERATION[generation]


def create(
    target: Target, accelerator_type: str, version: str | None, *, spot: bool, preemptible: bool, queued: bool
) -> list[Command]:
    """Create the TPU VM / slice; `queued` goes through a queued resource (Cloud TPU's advice for spot capacity)."""
    if spot and preemptible:
        raise LaunchError("--spot and --preemptible are exclusive: spot VMs are the newer form of preemptible ones")
    if queued and preemptible:
        raise LaunchError("--queued supports --spot, not --preemptible (queued resources have no preemptible mode)")
    runtime = runtime_version(accelerator_type, version)
    capacity = ["--spot"] if spot else ["--preemptible"] if preemptible else []
    if queued:
        argv = ["gcloud", "compute", "tpus", "queued-resources", "create", target.name, f"--node-id={target.name}"]
        argv += target.location_flags()
        argv += [f"--accelerator-type={accelerator_type}", f"--runtime-version={runtime}", *capacity]
        return [Command(f"queue a request for {accelerator_type} (TPU {target.name})", argv)]
    argv = ["gcloud", "compute", "tpus", "tpu-vm", "create", target.name, *target.location_flags()]
    argv += [f"--accelerator-type={accelerator_type}", f"--version={runtime}", *capacity]
    return [Command(f"create TPU {target.name} ({accelerator_type}, {shlex.quote(runtime)})", argv)]


def on_all_workers(target: Target, remote_command: str, purpose: str, worker: str = "all") -> Command:
    """`remote_command` (a bash command line) run by every worker of the slice at once."""
    argv = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", target.name, *target.location_flags()]
    argv += [f"--worker={worker}", f"--command={remote_command}"]
    return Command(purpose, argv)


def install_command(remote_dir: str, extras: str, python: str) -> str:
    """Bash run in `remote_dir` on each worker: a uv-managed virtual env with the package installed editable."""
    venv_python = shlex.quote(".venv/bin/python")
    package = shlex.quote(f".[{extras}]") if extras else "."
    return " && ".join(
        [
            f"cd {shlex.quote(remote_dir)}",
            INSTALL_UV,
            'export PATH="$HOME/.local/bin:$PATH"',
            f"uv venv --allow-existing --python {shlex.quote(python)} .venv",
            f"uv pip install --python {venv_python} -e {package}",
            f"{venv_python} -c {shlex.quote(VERSION_CHECK)}",
        ]
    )


def setup_from_checkout(
    target: Target, repo: str, archive: str, remote_dir: str, extras: str, python: str, commit: str = "HEAD"
) -> list[Command]:
    """Copy `commit` of the local checkout to every worker (git archive + scp) and install it there."""
    pack = Command(
        f"pack {shlex.quote(commit)} of {shlex.quote(repo)} (committed files only)",
        ["git", "-C", repo, "archive", "--format=tar.gz", f"--output={archive}", commit],
    )
    copy = Command(
        "copy it to every worker",
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", archive, f"{target.name}:{ARCHIVE_ON_WORKER}", "--worker=all"]
        + target.location_flags(),
    )
    # Unpacked over the folder, not into a fresh one: files a user added there (a .venv, notes) stay.
    unpack = f"mkdir -p {shlex.quote(remote_dir)} && tar -xzf {ARCHIVE_ON_WORKER} -C {shlex.quote(remote_dir)}"
    install_there = f"set -e; {unpack} && {install_command(remote_dir, extras, python)}"
    install = on_all_workers(target, install_there, "unpack and install on every worker")
    return [pack, copy, install]


def setup_from_git(
    target: Target, git_url: str, ref: str, remote_dir: str, extras: str, python: str
) -> list[Command]:
    """Clone (or update) `git_url` at `ref` on every worker and install it there."""
    folder, url, ref_q = shlex.quote(remote_dir), shlex.quote(git_url), shlex.quote(ref)
    checkout = (
        f"if [ -d {folder}/.git ]; then git -C {folder} fetch --tags origin; else git clone {url} {folder}; fi"
        f" && git -C {folder} checkout --force {ref_q}"
    )
    return [
        on_all_workers(
            target, f"set -e; {checkout} && {install_command(remote_dir, extras, python)}",
            f"clone {shlex.quote(git_url)} at {shlex.quote(ref)} and install on every worker",
        )
    ]


def bucket_name(bucket: str) -> str:
    """`my-bucket` or `gs://my-bucket` → `my-bucket`; anything else is named."""
    name = bucket.removeprefix("gs://").rstrip("/")
    if not BUCKET_NAME.match(name):
        raise LaunchError(f"--gcsfuse-bucket {bucket!r} is not a bucket name: give the bucket alone, e.g. "
                          f"--gcsfuse-bucket=my-bucket (not a path inside it; mount the bucket, pass the path below "
                          f"{DEFAULT_MOUNT_ROOT}/my-bucket)")
    return name


def mount_bucket(target: Target, bucket: str, mount_point: str | None = None) -> Command:
    """Mount `bucket` read-only with gcsfuse at `mount_point` (default /mnt/gcs/BUCKET) on every worker; installs
    gcsfuse where it is missing, and leaves a mount that is already there alone."""
    name = bucket_name(bucket)
    mount_point = mount_point or f"{DEFAULT_MOUNT_ROOT}/{name}"
    folder = shlex.quote(mount_point)
    mount = shlex.join(["gcsfuse", *GCSFUSE_OPTIONS, name]) + f" {folder}"
    remote = "set -e; " + " && ".join([
        INSTALL_GCSFUSE,
        f'sudo mkdir -p {folder} && sudo chown "$(id -u):$(id -g)" {folder}',
        f"{{ mountpoint -q {folder} || {mount}; }}",
    ])
    return on_all_workers(target, remote, f"mount gs://{name} read-only at {shlex.quote(mount_point)} on every "
                          "worker (gcsfuse)")


def parse_env(assignments: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE strings (from --env) as a dict; a malformed one is named."""
    env = {}
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise LaunchError(f"--env {assignment!r} is not KEY=VALUE with KEY a shell variable name (e.g. --env "
                              "JAX_LOG_COMPILES=1)")
        env[key] = value
    return env


def run_everywhere(
    target: Target,
    command: Sequence[str],
    remote_dir: str,
    env: dict[str, str],
    log: str | None,
    worker: str = "all",
) -> list[Command]:
    """Run `command` (an argv) in the installed package's env on every worker; with `log`, detached into that file.

    Every worker starts the same command: on a pod slice `jax.distributed.initialize()` then finds its peers from
    the TPU metadata.
    """
    if not command:
        raise LaunchError(
            "no command to run: give it after `--`, e.g. `python -m launch.tpu run --name=N --zone=Z -- python -m "
            "embed_jax.main --config=configs/jasper.py --workdir=gs://BUCKET/run`"
        )
    exports = [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    program = shlex.join(command)
    if log:
        # nohup + redirections: the run outlives the ssh session; `< /dev/null` lets ssh return at once.
        program = f"nohup {program} > {shlex.quote(log)} 2>&1 < /dev/null &"
    remote = " && ".join([f"cd {shlex.quote(remote_dir)}", "source .venv/bin/activate", *exports, program])
    where = f"detached, output in {shlex.quote(f'{remote_dir}/{log}')} on each worker" if log else "attached"
    return [on_all_workers(target, remote, f"run on workers {shlex.quote(worker)} ({where})", worker=worker)]


def delete(target: Target, *, queued: bool, yes: bool) -> list[Command]:
    """Delete the TPU (or its queued resource, which deletes the TPU with it); gcloud asks first unless `yes`."""
    if queued:
        argv = ["gcloud", "compute", "tpus", "queued-resources", "delete", target.name, *target.location_flags()]
        argv.append("--force")  # also deletes the TPU the request created
    else:
        argv = ["gcloud", "compute", "tpus", "tpu-vm", "delete", target.name, *target.location_flags()]
    if yes:
        argv.append("--quiet")
    return [Command(f"delete TPU {target.name}", argv)]


def describe(target: Target) -> list[Command]:
    argv = ["gcloud", "compute", "tpus", "tpu-vm", "describe", target.name, *target.location_flags()]
    return [Command(f"describe TPU {target.name}", argv)]
