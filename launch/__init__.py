"""Cloud TPU launch scripts: `python -m launch.tpu create|setup|run|delete|describe` (see docs/launch.md).

The standard library, absl-py's flags (embed_jax/cli.py, importable from the checkout) and the `gcloud` CLI: this runs
on a laptop that has neither jax nor the package installed.
"""
