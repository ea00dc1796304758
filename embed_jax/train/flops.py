"""Analytic FLOPs of one train step, so that model FLOPs utilisation (MFU) can be read off any accelerator's run.

Counted as in the PaLM paper's appendix B (a multiply-add is 2 FLOPs; only matmuls are counted):

    forward  = Σ_layers [ 2·T·P_layer + 4·B·L²·A ] + 2·B·H·Σ head dims + 2·B²·Σ head dims (Gram matrices)
    backward = 2 × the forward FLOPs of the part that needs gradients: the trainable layers (and everything above
               them, which our stages always train) and the heads

T = B·L tokens (padded: that is what the hardware computes), P_layer the matmul parameters of one encoder layer
(kernels only; embeddings are lookups), A = heads·head_dim (the attention width), H the pooled width. The loss's
pair sorting is not a matmul and is left out. A stage that trains only the heads costs a forward plus 2× the heads.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from flax import nnx


@dataclasses.dataclass(frozen=True)
class EncoderShape:
    num_layers: int
    matmul_params_per_layer: int
    attention_width: int
    hidden_size: int


def encoder_shape(student: nnx.Module) -> EncoderShape:
    """Reads the text encoder's per-layer matmul parameters from its weights (any family, scanned or not)."""
    config = student.text_encoder.config
    num_layers, num_heads, head_dim = config.num_hidden_layers, config.num_attention_heads, config.head_dim
    kernels = 0
    for path, variable in nnx.to_flat_state(nnx.state(student.text_encoder, nnx.Param)):
        names = [str(part) for part in path]
        is_layer = any(part.isdigit() for part in names) or "layers" in names or "layer" in names or "h" in names
        if is_layer and names[-1] == "kernel":
            kernels += int(variable.get_value().size)
    return EncoderShape(num_layers, kernels // num_layers, num_heads * head_dim, int(student.hidden_size))


def forward_flops(shape: EncoderShape, batch: int, length: int, head_dims: Sequence[int],
                  layers: int | None = None) -> float:
    """Forward FLOPs of `layers` encoder layers (default all) plus pooling heads and their Gram matrices."""
    layers = shape.num_layers if layers is None else layers
    tokens = batch * length
    per_layer = 2 * tokens * shape.matmul_params_per_layer + 4 * batch * length**2 * shape.attention_width
    heads = 2 * batch * shape.hidden_size * sum(head_dims) + 2 * batch**2 * sum(head_dims)
    return float(layers * per_layer + heads)


def train_step_flops(shape: EncoderShape, batch: int, length: int, head_dims: Sequence[int],
                     trainable_layers: int) -> float:
    """Forward + backward FLOPs of one step in which the top `trainable_layers` layers and the heads train."""
    forward = forward_flops(shape, batch, length, head_dims)
    needs_gradient = forward_flops(shape, batch, length, head_dims, layers=trainable_layers)
    return forward + 2 * needs_gradient
