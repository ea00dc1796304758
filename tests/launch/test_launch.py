"""launch/tpu.py through its command line, as a user runs it (`python -m launch.tpu ... --dry-run`).

There is no Google Cloud here, so no gcloud call is made; what is checked is what would be run: the exact gcloud
argv, and that a training command with spaces, quotes and `$` reaches the workers' bash unchanged. For that, the
printed line is run by a real bash in which `gcloud` is a function that hands its `--command=` to a second real bash,
as `gcloud compute tpus tpu-vm ssh` hands it to each worker's shell.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from launch import gcloud

REPO_ROOT = Path(__file__).resolve().parents[2]
TPU = ["--name=embed-test", "--zone=us-central2-b"]


def launch(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.tpu", *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def with_dry_run(arguments: tuple[str, ...]) -> tuple[str, ...]:
    """--dry-run right after the action: after `--` it would belong to the workers' command, and gcloud would run.
    `create` gets --plan-config= (no plan: compiling the paper's config takes minutes; tests/plan covers the plan)."""
    no_plan = ("--plan-config=",) if arguments[:1] == ("create",) else ()
    return (*arguments[:1], "--dry-run", *no_plan, *arguments[1:])


def dry_run(*arguments: str, env: dict | None = None) -> list[list[str]]:
    """The argv of each printed command (comment lines dropped), parsed as a POSIX shell would."""
    result = launch(*with_dry_run(arguments), env=env)
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if not line.startswith("#")]


def remote_command(argv: list[str]) -> str:
    [command] = [argument.removeprefix("--command=") for argument in argv if argument.startswith("--command=")]
    return command


# --- create / delete / describe ---------------------------------------------------------------------------------------


def test_create_dry_run_plans_the_accelerator_type():
    from launch import tpu

    options = tpu.parse_request(["create", *TPU, "--accelerator-type=v5p-32", "--dry-run"])
    assert tpu.plan_command(options)[1:] == ["-m", "embed_jax.plan", "--config=configs/jasper.py", "--topology=v5p-32"]
    options = tpu.parse_request(["create", *TPU, "--accelerator-type=v5p-32", "--plan-config="])
    assert tpu.plan_command(options) is None


def test_create_v4_spot_slice():
    [argv] = dry_run("create", *TPU, "--accelerator-type=v4-32", "--spot")
    assert argv == [
        "gcloud", "compute", "tpus", "tpu-vm", "create", "embed-test", "--zone=us-central2-b",
        "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot",
    ]  # fmt: skip


def test_create_v5e_picks_its_runtime_and_passes_project_and_preemptible():
    [argv] = dry_run("create", *TPU, "--project=my-project", "--accelerator-type=v5litepod-16", "--preemptible")
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "embed-test"]
    assert set(argv[6:]) == {
        "--zone=us-central2-b", "--project=my-project", "--accelerator-type=v5litepod-16",
        "--version=v2-alpha-tpuv5-lite", "--preemptible",
    }  # fmt: skip


def test_create_with_an_explicit_runtime_for_a_generation_without_default():
    [argv] = dry_run("create", *TPU, "--accelerator-type=v7x-8", "--version=some-runtime")
    assert "--version=some-runtime" in argv and "--accelerator-type=v7x-8" in argv


def test_create_through_a_queued_resource_and_delete_it():
    [argv] = dry_run("create", *TPU, "--accelerator-type=v6e-16", "--spot", "--queued")
    assert argv[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "embed-test"]
    assert {"--node-id=embed-test", "--runtime-version=v2-alpha-tpuv6e", "--spot"} <= set(argv)
    [argv] = dry_run("delete", *TPU, "--queued", "--yes")
    assert argv == [
        "gcloud", "compute", "tpus", "queued-resources", "delete", "embed-test", "--zone=us-central2-b", "--force",
        "--quiet",
    ]  # fmt: skip


def test_delete_lets_gcloud_ask_unless_yes():
    [argv] = dry_run("delete", *TPU)
    assert argv == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "embed-test", "--zone=us-central2-b"]
    [argv] = dry_run("delete", *TPU, "--yes")
    assert argv[-1] == "--quiet"


def test_describe():
    [argv] = dry_run("describe", *TPU)
    assert argv == ["gcloud", "compute", "tpus", "tpu-vm", "describe", "embed-test", "--zone=us-central2-b"]


# --- run: the command must reach every worker's bash unchanged -------------------------------------------------------

TRICKY_ARGUMENTS = ["--workdir=gs://bucket/my run", "it's", 'say "hi"', "$HOME", "*", "a;b && c", ""]


def run_printed_line_as_the_workers_would(line: str, home: Path) -> subprocess.CompletedProcess:
    """Runs the printed line in bash with `gcloud` standing for the ssh hop: its --command= goes to bash in `home`."""
    hop = (
        'gcloud() { for argument; do case "$argument" in '
        '--command=*) (cd "$HOME" && bash -c "${argument#--command=}");; esac; done; }'
    )
    worker_env = dict(os.environ, HOME=str(home))
    return subprocess.run(["bash", "-c", f"{hop}\n{line}"], capture_output=True, text=True, env=worker_env, timeout=60)


def installed_home(tmp_path: Path) -> Path:
    """A worker's home after `setup`: the package folder with a virtual env to activate."""
    home = tmp_path / "home"
    (home / "embed_jax" / ".venv" / "bin").mkdir(parents=True)
    (home / "embed_jax" / ".venv" / "bin" / "activate").write_text("export EMBED_JAX_VENV=active\n")
    return home


RECORD_ARGV = (
    "import json, os, sys; "
    "json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), 'venv': os.environ.get('EMBED_JAX_VENV'), "
    "'note': os.environ.get('RUN_NOTE')}, open('received.json', 'w'))"
)


@pytest.mark.parametrize("detached", [False, True], ids=["attached", "detached-with-log"])
def test_run_delivers_the_command_unchanged_to_the_workers(tmp_path, detached):
    home = installed_home(tmp_path)
    options = ["run", *TPU, "--env=RUN_NOTE=two words & a 'quote'"] + (["--log=train log.txt"] if detached else [])
    result = launch(*with_dry_run((*options, "--", sys.executable, "-c", RECORD_ARGV, *TRICKY_ARGUMENTS)))
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    argv = shlex.split(line)
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "embed-test"]
    assert "--worker=all" in argv

    worker = run_printed_line_as_the_workers_would(line, home)
    assert worker.returncode == 0, worker.stderr
    received_file = home / "embed_jax" / "received.json"
    deadline = time.monotonic() + 30
    while detached and not received_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # the detached run finishes after the ssh hop returned
    received = json.loads(received_file.read_text())
    assert received == {
        "argv": TRICKY_ARGUMENTS,
        "cwd": str(home / "embed_jax"),
        "venv": "active",
        "note": "two words & a 'quote'",
    }
    if detached:
        assert (home / "embed_jax" / "train log.txt").exists()


def test_run_on_one_worker():
    [argv] = dry_run("run", *TPU, "--worker=0", "--", "python", "-c", "print(1)")
    assert "--worker=0" in argv and "--worker=all" not in argv


def test_the_jasper_command_as_documented():
    command = ["python", "-m", "embed_jax.main", "--config=configs/jasper.py", "--workdir=gs://my-bucket/jasper"]
    [argv] = dry_run("run", *TPU, "--log=train.log", "--", *command)
    remote = remote_command(argv)
    assert remote.startswith("cd embed_jax && source .venv/bin/activate && nohup ")
    assert shlex.join(command) in remote and remote.endswith("> train.log 2>&1 < /dev/null &")


# --- setup ------------------------------------------------------------------------------------------------------------


def test_setup_copies_the_checkouts_commit_and_installs_on_every_worker(tmp_path):
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = head.stdout.strip()
    pack, copy, install = dry_run("setup", *TPU, env=dict(os.environ, TMPDIR=str(tmp_path)))

    assert pack[:4] == ["git", "-C", str(REPO_ROOT), "archive"] and pack[-1] == commit
    subprocess.run(pack, check=True)  # the packing step is local: run it for real
    archive = Path(next(argument for argument in pack if argument.startswith("--output=")).split("=", 1)[1])
    assert archive.parent == tmp_path
    with tarfile.open(archive) as packed:
        packed_files = {member.name for member in packed.getmembers() if member.isfile()}
    list_tracked = ["git", "-C", str(REPO_ROOT), "ls-tree", "-r", "--name-only", commit]
    tracked = subprocess.run(list_tracked, capture_output=True, text=True).stdout.splitlines()
    assert packed_files == set(tracked) and "pyproject.toml" in packed_files

    assert copy[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert copy[5:7] == [str(archive), "embed-test:embed_jax.tar.gz"] and "--worker=all" in copy
    remote = remote_command(install)
    assert "--worker=all" in install
    assert "tar -xzf embed_jax.tar.gz -C embed_jax" in remote and "rm -rf" not in remote
    assert "uv venv --allow-existing --python 3.11 .venv" in remote
    assert "uv pip install --python .venv/bin/python -e '.[tpu]'" in remote
    # A missing uv comes pinned from the package index, never from a web script piped into a shell.
    assert f"python3 -m pip install --user --quiet uv=={gcloud.UV_VERSION}" in remote
    assert "| sh" not in remote and "curl" not in remote and "astral.sh" not in remote
    syntax = subprocess.run(["bash", "-n", "-c", remote], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_setup_from_git_clones_the_ref_on_every_worker():
    git_url = "--git-url=https://example.org/team/embed_jax.git"
    [install] = dry_run("setup", *TPU, git_url, "--ref=v0.1 rc", "--python=3.12")
    remote = remote_command(install)
    assert "git clone https://example.org/team/embed_jax.git embed_jax" in remote
    assert "git -C embed_jax checkout --force 'v0.1 rc'" in remote
    assert "--python 3.12" in remote
    syntax = subprocess.run(["bash", "-n", "-c", remote], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def test_setup_mounts_a_bucket_with_gcsfuse_on_every_worker(tmp_path):
    """The mount step run by a real bash, with sudo, gcsfuse and mountpoint standing in for the worker's tools."""
    environment = dict(os.environ, TMPDIR=str(tmp_path))
    *install, mount = dry_run("setup", *TPU, "--gcsfuse-bucket=gs://my-bucket", env=environment)
    assert len(install) == 3 and mount[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "embed-test"]
    assert "--worker=all" in mount
    remote = remote_command(mount)
    assert "gcsfuse -o ro --implicit-dirs" in remote and remote.endswith("my-bucket /mnt/gcs/my-bucket; }")

    folder = tmp_path / "mnt gcs" / "my-bucket"
    [mount] = dry_run("setup", *TPU, "--git-url=https://example.org/e.git", "--gcsfuse-bucket=my-bucket",
                      f"--mount-point={folder}")[1:]
    calls = tmp_path / "calls.txt"
    stand_ins = (
        f'sudo() {{ "$@"; }}; mountpoint() {{ return 1; }}; id() {{ echo 0; }}; chown() {{ :; }}\n'
        f'gcsfuse() {{ printf "%s\\n" "$@" > {shlex.quote(str(calls))}; }}\n'
    )
    worker = subprocess.run(["bash", "-c", stand_ins + remote_command(mount)], capture_output=True, text=True,
                            timeout=60)
    assert worker.returncode == 0, worker.stderr
    assert folder.is_dir()
    assert calls.read_text().splitlines() == [
        "-o", "ro", "--implicit-dirs", "--type-cache-max-size-mb=-1", "--stat-cache-max-size-mb=-1",
        "--kernel-list-cache-ttl-secs=-1", "--metadata-cache-ttl-secs=-1", "my-bucket", str(folder),
    ]  # fmt: skip


def test_setup_leaves_a_mounted_bucket_alone(tmp_path):
    [mount] = dry_run("setup", *TPU, "--git-url=https://example.org/e.git", "--gcsfuse-bucket=my-bucket",
                      f"--mount-point={tmp_path / 'mounted'}")[1:]
    stand_ins = 'sudo() { "$@"; }; mountpoint() { return 0; }; gcsfuse() { echo "mounted twice" >&2; exit 1; }\n'
    worker = subprocess.run(["bash", "-c", stand_ins + remote_command(mount)], capture_output=True, text=True,
                            timeout=60)
    assert worker.returncode == 0, worker.stderr


# --- bad input --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["create", "--zone=z", "--accelerator-type=v4-8"], "the following arguments are required: --name"),
        (["create", "--name=a", "--accelerator-type=v4-8"], "the following arguments are required: --zone"),
        (["create", "--name=a", "--zone=z"], "the following arguments are required: --accelerator-type"),
        (["run", "--name=a", "--zone=z"], "no command to run: give it after `--`"),
        (["run", "--name=a", "--zone=z", "--"], "no command to run: give it after `--`"),
        ([], "the following arguments are required: {create,setup,run,delete,describe}"),
        (["create", "--name=My_TPU", "--zone=z", "--accelerator-type=v4-8"], "--name 'My_TPU' is not a valid"),
        (["create", *TPU, "--accelerator-type=v4"], "is not of the form GENERATION-SIZE"),
        (["create", *TPU, "--accelerator-type=v7x-8"], "Pass --version=RUNTIME_VERSION explicitly"),
        (["create", *TPU, "--accelerator-type=v4-8", "--spot", "--preemptible"], "--spot and --preemptible are"),
        (["run", *TPU, "--env=NO_VALUE", "--", "true"], "--env 'NO_VALUE' is not KEY=VALUE"),
        (["delete", *TPU, "--", "true"], "`delete` takes no command after `--`"),
        (["setup", *TPU, "--commit=no-such-commit"], "--commit 'no-such-commit' is not a commit of"),
        (["create", *TPU, "--accelerator-type=v4-8", "--git-url=x"], "unrecognized arguments: --git-url"),
        (["destroy", *TPU], "invalid choice: 'destroy'"),
        (["create", *TPU, "--accelerator-type=v4-8", "--nope"], "Unknown command line flag 'nope'"),
        (["setup", *TPU, "--gcsfuse-bucket=gs://b/records"], "--gcsfuse-bucket 'gs://b/records' is not a bucket"),
        (["setup", *TPU, "--mount-point=/mnt/x"], "--mount-point needs exactly one --gcsfuse-bucket"),
    ],
    ids=[
        "no-name", "no-zone", "no-accelerator", "run-without-command", "run-with-empty-command", "no-action",
        "bad-name", "bad-accelerator", "unknown-generation", "spot-and-preemptible", "bad-env", "command-for-delete",
        "bad-commit", "flag-of-another-action", "unknown-action", "unknown-flag", "bucket-path",
        "mount-point-without-bucket",
    ],
)  # fmt: skip
def test_bad_requests_are_refused_with_what_to_fix(arguments, expected):
    result = launch(*with_dry_run(tuple(arguments)))
    assert result.returncode == 2
    assert expected in result.stderr
    assert result.stdout == ""


def test_without_gcloud_the_error_says_what_to_install(tmp_path):
    """Not a dry run, on a PATH without gcloud: nothing runs, and the error says what to install."""
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    result = launch("describe", *TPU, env=dict(os.environ, PATH=str(empty_path)))
    assert result.returncode == 127
    assert "gcloud is not on PATH. Install the Google Cloud CLI" in result.stderr


# --- the printed plan, pasted into a shell, runs only its commands ----------------------------------------------------

INJECTED_LINE = "touch INJECTED"


@pytest.mark.parametrize(
    "arguments",
    [
        ["setup", *TPU, f"--git-url=https://example.org/x.git\n{INJECTED_LINE}"],
        ["setup", *TPU, "--git-url=https://example.org/x.git", f"--ref=main\n{INJECTED_LINE}"],
        ["setup", *TPU, f"--remote-dir=embed_jax\r\n{INJECTED_LINE}"],
        ["setup", *TPU, "--gcsfuse-bucket=my-bucket", f"--mount-point=/mnt/b\n{INJECTED_LINE}"],
        ["run", *TPU, f"--log=run.log\n{INJECTED_LINE}", "--", "true"],
        ["run", *TPU, "--", "python", f"--flag=a\x1b[2Jb"],
    ],
    ids=["git-url", "ref", "remote-dir", "mount-point", "log", "command-escape"],
)
def test_a_control_character_in_any_launch_argument_is_refused(arguments):
    result = launch(*with_dry_run(tuple(arguments)))
    assert result.returncode == 2 and result.stdout == ""
    assert "holds a control character" in result.stderr and "launch arguments are one line each" in result.stderr
    flag = next((argument.split("=")[0] for argument in arguments[3:] if "\n" in argument or "\r" in argument),
                "the command after --")
    assert flag in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["setup", *TPU, f"--git-url=https://example.org/x.git;{INJECTED_LINE}", f"--ref=$({INJECTED_LINE})"],
        ["setup", *TPU, f"--remote-dir=`{INJECTED_LINE}`", "--gcsfuse-bucket=my-bucket",
         f"--mount-point=/mnt/b;{INJECTED_LINE}"],
        ["run", *TPU, f"--log=$({INJECTED_LINE}).log", f"--remote-dir=x && {INJECTED_LINE}", "--", "true"],
    ],
    ids=["git", "checkout-and-mount", "run"],
)
def test_pasting_the_printed_plan_runs_no_injected_command(arguments, tmp_path):
    """The dry run's output, comments and all, pasted into bash: gcloud and git are functions that do nothing (what
    they would do remotely is test_run_delivers_the_command_unchanged_to_the_workers's), so anything that runs here
    is an injected command."""
    result = launch(*with_dry_run(tuple(arguments)))
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("# ") and INJECTED_LINE in line for line in result.stdout.splitlines())
    pasted = subprocess.run(["bash", "-c", "gcloud() { :; }; git() { :; }\n" + result.stdout], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert pasted.returncode == 0, pasted.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_purpose_comment_stays_one_line():
    assert gcloud.Command("clone x\ntouch y", []).comment_line() == "# clone x\\ntouch y"
