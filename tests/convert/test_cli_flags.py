"""The exporter's command-line flags exist only when it runs as the program: evaluation imports it next to
embed_jax.main, and both name a --workdir flag."""
import subprocess
import sys


def test_exporter_and_trainer_import_together():
    code = "import embed_jax.main, embed_jax.convert.hf, embed_jax.eval.overlap; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
