#!/usr/bin/env bash
# Set everything up (idempotent) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# --teachers: the real all-mpnet-base-v2 that the parity, preflight and router tests load (11 s on a fresh machine;
# without it they fail on a fresh machine, whose ~/.cache/embed_jax is empty).
bash scripts/setup.sh --teachers
# Two workers: most of the suite is single-threaded XLA compilation (measured: 396 tests in 15.5 min with -n 2
# on the 2-core machine while another job ran).
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
