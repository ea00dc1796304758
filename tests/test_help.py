"""`--help` succeeds in every program: the text and the flags on stdout, exit status 0.

The two programs run through absl's app.run (whose own --help exits 1) run as the user runs them, in a process; the
others are called in this process.
"""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_PROCESS = ("embed_jax.convert.hf", "embed_jax.convert.router", "embed_jax.convert.onnx", "embed_jax.convert.shrink_cached",
              "embed_jax.data.verify", "embed_jax.eval.__main__", "embed_jax.eval.zero_shot",
              "embed_jax.teachers.caption_export", "embed_jax.assets")


@pytest.mark.parametrize("module", IN_PROCESS)
def test_help_exits_zero_in_process(module, capsys):
    main = importlib.import_module(module).main
    try:
        code = main(["--help"])
    except SystemExit as exit_:
        code = exit_.code
    assert code in (0, None)
    assert len(capsys.readouterr().out.splitlines()) > 3


@pytest.mark.parametrize("module", ["embed_jax.main", "embed_jax.teachers.export"])
def test_help_exits_zero_for_absl_programs(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--config" in result.stdout


def test_eval_help_lists_the_model_specs(capsys):
    from embed_jax.eval import __main__ as eval_main

    with pytest.raises(SystemExit) as exit_:
        eval_main.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for form in ("asset:all-MiniLM-L6-v2", "concat:SPEC+SPEC", "pca:SPEC@DIM", "asym:QUERY_SPEC|DOC_SPEC",
                 "onnx_export.json", "student_config.json"):
        assert form in out
