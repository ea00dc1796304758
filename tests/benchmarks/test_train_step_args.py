"""benchmarks/train_step.py refuses what it cannot run with one line that says what to do, before loading a model."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"
spec = importlib.util.spec_from_file_location("train_step_benchmark", SCRIPT)
train_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train_step)


def args(*flags):
    return train_step.parse_args(list(flags))


def test_default_flags_pass_on_a_cpu():
    train_step.check_args(args(), gpus=0)


def test_gpu_flag_without_a_gpu_is_refused():
    with pytest.raises(train_step.BadInput, match="--gpu was given but this machine has no CUDA GPU"):
        train_step.check_args(args("--gpu"), gpus=0)


def test_unknown_model_is_refused_naming_the_known_ones():
    with pytest.raises(train_step.BadInput, match="--model 'bert-tiny' is not known; choose one of bert-base"):
        train_step.check_args(args("--model", "bert-tiny"), gpus=0)


def test_batch_that_does_not_divide_by_the_devices_is_refused(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    with pytest.raises(train_step.BadInput, match="--batch 6 does not divide by the 4 device"):
        train_step.check_args(args("--batch", "6"), gpus=0)
    with pytest.raises(train_step.BadInput, match="--batch 6 does not divide by the 4 device"):
        train_step.check_args(args("--gpu", "--batch", "6"), gpus=4)


@pytest.mark.parametrize("flags", [("--stage", "encoder"), ("--frameworks", "jax,tf"), ("--rounds", "0")])
def test_other_flags_are_checked(flags):
    with pytest.raises(train_step.BadInput, match=flags[0]):
        train_step.check_args(args(*flags), gpus=0)


@pytest.mark.slow
def test_the_script_prints_one_line_and_no_traceback():
    done = subprocess.run([sys.executable, str(SCRIPT), "--model", "bert-tiny"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "train_step.py: error: --model 'bert-tiny' is not known; choose one of bert-base, bert-large, minilm"]
