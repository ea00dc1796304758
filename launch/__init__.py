"""Cloud TPU launch scripts: `python -m launch.tpu create|setup|run|delete|describe` (see docs/launch.md).

Only the standard library and the `gcloud` CLI: this runs on a laptop that has neither jax nor the package installed.
"""
