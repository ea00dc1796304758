"""XLA flags for every test process: the conftest's own, and the processes tests start (which set their own device
count). Imports nothing, so conftest can use it before jax is imported."""

# LLVM at -O0 for the CPU programs tests compile: the suite is mostly compiling tiny students, and -O0 compiles them
# about a third faster (tests/train/test_step.py -k sharded_step_equals: 96 s → 64 s on the 2-core machine). The
# programs run slower and not bit-identically to -O2's, but every tolerance of the suite holds (1,082 passed at -O0),
# and tests run them for a few steps.
COMPILE_FLAGS = "--xla_backend_optimization_level=0"


def xla_flags(device_count: int) -> str:
    """XLA_FLAGS for a test process with `device_count` simulated CPU devices."""
    return f"--xla_force_host_platform_device_count={device_count} {COMPILE_FLAGS}"
