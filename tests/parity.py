"""Numerical comparisons for tests: tolerances scaled to the values compared, and the torch-vs-Flax parity check of
the model tests (tests/models).

Two computations of the same fp32 quantity in a different order (scan vs loop, remat, a sharded reduction, another
library's kernels) differ by a few units in the last place *of the largest terms involved*: an absolute tolerance
tighter than that fails sooner or later for no reason (a gradient entry of magnitude 16.5 once differed by 1.9e-6,
one fp32 step, under `atol=1e-6`). `assert_close` bounds each element by `rtol` times the largest magnitude
compared (`assert_trees_close`: of the whole tree).
Bit-exact expectations (round trips, frozen parameters, a resumed run against the same computation) keep
`np.testing.assert_array_equal`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from embed_jax.models import pooling

# fp32 parity of every text family with Hugging Face PyTorch: last hidden states at real tokens and masked means
# within 1e-4 absolute (docs/models.md, "Parity"; observed ≤ 1e-6).
PARITY_ATOL = 1e-4
# Two fp32 computation orders of one quantity: ~8 fp32 steps (2^-23 ≈ 1.2e-7) of the largest magnitude compared.
ORDER_RTOL = 1e-6


def assert_close(actual, expected, *, rtol: float = ORDER_RTOL, scale: float | None = None, err_msg: str = "") -> None:
    """|actual − expected| ≤ rtol · (|expected| + scale), element by element; `scale` defaults to the largest
    magnitude of both arrays (pass a larger one when the values were summed from larger terms)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if scale is None:
        scale = largest_magnitude(actual, expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


def assert_trees_close(actual, expected, *, rtol: float = ORDER_RTOL) -> None:
    """`assert_close` for every leaf of two pytrees (gradients, parameters), scaled to the largest magnitude of the
    whole tree: a gradient that is zero in exact arithmetic (a bias that a LayerNorm or a softmax cancels) is
    rounding noise of the terms it was summed from, which the other gradients' size measures."""
    actual_leaves, expected_leaves = jax.tree.leaves(actual), jax.tree.leaves(expected)
    assert len(actual_leaves) == len(expected_leaves), (len(actual_leaves), len(expected_leaves))
    scale = largest_magnitude(*actual_leaves, *expected_leaves)
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(expected)[0]]
    for path, got, want in zip(paths, actual_leaves, expected_leaves, strict=True):
        assert_close(got, want, rtol=rtol, scale=scale, err_msg=path)


def largest_magnitude(*arrays) -> float:
    return max((float(np.abs(np.asarray(array, np.float64)).max(initial=0.0)) for array in arrays), default=0.0)


def padded_batch(vocab_size: int, lengths, total_length: int, *, pad_token_id: int = 0, seed: int = 0):
    """(ids, mask) torch tensors: random ids (never the pad id) for rows of the given real lengths, right-padded
    with `pad_token_id`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (len(lengths), total_length), generator=generator)
    ids[ids == pad_token_id] = (pad_token_id + 1) % vocab_size
    mask = torch.zeros(len(lengths), total_length, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    ids[mask == 0] = pad_token_id
    return ids, mask


def assert_masked_parity(flax_hidden, torch_hidden, mask, *, atol: float = PARITY_ATOL) -> np.ndarray:
    """Hidden states at real tokens, and their masked means, within `atol`; returns the Flax hidden states."""
    real = np.asarray(mask).astype(bool)
    flax_hidden, torch_hidden = np.asarray(flax_hidden), np.asarray(torch_hidden)
    np.testing.assert_allclose(flax_hidden[real], torch_hidden[real], atol=atol, rtol=0)
    torch_mean = (torch_hidden * real[..., None]).sum(1) / real.sum(1, keepdims=True)
    flax_mean = np.asarray(pooling.masked_mean(jnp.asarray(flax_hidden), jnp.asarray(real.astype(np.int32))))
    np.testing.assert_allclose(flax_mean, torch_mean, atol=atol, rtol=0)
    return flax_hidden


def check_parity(torch_model, flax_module, ids, mask, *, torch_mask=None, token_type_ids=None,
                 atol: float = PARITY_ATOL) -> np.ndarray:
    """Runs the Hugging Face module (`last_hidden_state`, fp32, no grad) and the Flax module (one jitted call) on
    the same padded batch and compares them at real tokens (`assert_masked_parity`). `torch_mask` is what torch is
    given instead of `mask` (a 4-D mask for bidirectional decoders); returns the Flax hidden states."""
    import torch

    torch_inputs = {"input_ids": ids, "attention_mask": mask if torch_mask is None else torch_mask}
    flax_inputs = {}
    if token_type_ids is not None:
        torch_inputs["token_type_ids"] = token_type_ids
        flax_inputs["token_type_ids"] = token_type_ids.numpy()
    with torch.no_grad():
        expected = torch_model(**torch_inputs).last_hidden_state.numpy()
    actual = forward(flax_module, ids.numpy(), mask.numpy(), **flax_inputs)
    return assert_masked_parity(actual, expected, mask.numpy(), atol=atol)


@nnx.jit
def forward(module, input_ids, attention_mask, **inputs):
    """One compiled call of a text encoder (eager NNX dispatches op by op, slower than compiling these tiny models)."""
    return module(jnp.asarray(input_ids), jnp.asarray(attention_mask),
                  **{key: jnp.asarray(value) for key, value in inputs.items()})
