"""Every program keeps its flags on a FlagValues of its own (embed_jax/cli.py): they import side by side, although
several name a --workdir, an --out or a --tokenizer, and each `main(argv)` starts from its defaults."""
import subprocess
import sys

import pytest

PROGRAMS = ("embed_jax.main", "embed_jax.convert.hf", "embed_jax.convert.shrink_cached", "embed_jax.eval.__main__",
            "embed_jax.eval.zero_shot", "embed_jax.teachers.caption_export", "embed_jax.teachers.export",
            "launch.tpu", "embed_jax.eval.overlap", "embed_jax.convert.onnx", "embed_jax.data.verify")


@pytest.mark.slow
def test_every_program_imports_next_to_the_others():
    code = "".join(f"import {name}; " for name in PROGRAMS) + "print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_second_main_call_starts_from_the_defaults(capsys):
    from embed_jax.eval import zero_shot

    assert zero_shot.main(["--workdir=/no/such/workdir", "--tokenizer=tok"]) == 2
    assert zero_shot.FLAGS["tokenizer"].value == "tok"
    assert zero_shot.main([]) == 2
    assert zero_shot.FLAGS["tokenizer"].value == ""
    assert "the following arguments are required: --workdir" in capsys.readouterr().err


def test_usage_errors_are_one_line_with_the_programs_exit_code(capsys):
    from embed_jax.convert import hf, shrink_cached

    assert hf.main(["--workdir=w"]) == 1
    assert shrink_cached.main(["--records=r", "--nope"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: --workdir (the training workdir) and --out (the folder to write) are required",
                     "error: Unknown command line flag 'nope'"]


def test_stray_arguments_are_refused_by_every_program_that_takes_none(capsys):
    from embed_jax.convert import onnx
    from embed_jax.data import verify
    from embed_jax.eval import __main__ as eval_main

    assert onnx.main(["--model=m", "--out=o", "stray"]) == 1
    assert verify.main(["--records=r", "stray"]) == 2
    assert eval_main.main(["--model=m", "--out=o", "stray"]) == 2
    assert onnx.main(["--model=m"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[:3] == ["error: unrecognized arguments: stray (settings are --flag=value)"] * 3
    assert lines[3] == "error: the following arguments are required: --out"
