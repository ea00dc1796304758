"""The TPU plan: a training config's every stage, built from shapes alone and compiled ahead of time for a named TPU
slice, on any CPU (`python -m embed_jax.plan --config=configs/jasper.py --topology=v5p-32`; docs/launch.md).

Importing this package keeps JAX on the CPU backend (the plan compiles *for* TPUs through libtpu; it runs on none)
and lets several plans load libtpu side by side (without ALLOW_MULTIPLE_LIBTPU_LOAD, libtpu's lock file serialises
them, or refuses a second process outright). Both are set before JAX is imported, which is why they live here.
"""
import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
