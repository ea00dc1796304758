"""embed_jax: distil several text-embedding teachers into one small, fast JAX/Flax student.

The method is "Jasper and Stella: distillation of SOTA embedding models" (arXiv 2412.19048). Data flows
corpus → teachers/ (PyTorch, the only torch on the training path's edge) → ArrayRecord shards → data/ (grain) →
models/ (Flax NNX student) → losses.py → train/ (jit over a mesh, Orbax) → convert/ (Hugging Face) → eval/.
"""

__version__ = "0.1.0"
