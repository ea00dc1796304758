"""Name table: Hugging Face SiglipVisionModel (or the vision half of SiglipModel) ↔ embed_jax.models.siglip."""
from embed_jax.models.tables import CONV_OIHW_TO_HWIO, IDENTITY, TRANSPOSE, Table

_LAYER = r"encoder\.layers\.(\d+)\."
_LINEAR = r"(q_proj|k_proj|v_proj|out_proj)"

TABLE = Table(
    family="siglip",
    rules=(
        (r"embeddings\.patch_embedding\.weight", "embeddings.patch_embedding.kernel", CONV_OIHW_TO_HWIO),
        (r"embeddings\.patch_embedding\.bias", "embeddings.patch_embedding.bias", IDENTITY),
        (r"embeddings\.position_embedding\.weight", "embeddings.position_embedding.embedding", IDENTITY),
        (_LAYER + r"(layer_norm1|layer_norm2)\.weight", "encoder.layers.{0}.{1}.scale", IDENTITY),
        (_LAYER + r"(layer_norm1|layer_norm2)\.bias", "encoder.layers.{0}.{1}.bias", IDENTITY),
        (_LAYER + rf"self_attn\.{_LINEAR}\.weight", "encoder.layers.{0}.self_attn.{1}.kernel", TRANSPOSE),
        (_LAYER + rf"self_attn\.{_LINEAR}\.bias", "encoder.layers.{0}.self_attn.{1}.bias", IDENTITY),
        (_LAYER + r"mlp\.(fc1|fc2)\.weight", "encoder.layers.{0}.mlp.{1}.kernel", TRANSPOSE),
        (_LAYER + r"mlp\.(fc1|fc2)\.bias", "encoder.layers.{0}.mlp.{1}.bias", IDENTITY),
        (r"post_layernorm\.weight", "post_layernorm.scale", IDENTITY),
        (r"post_layernorm\.bias", "post_layernorm.bias", IDENTITY),
        # Attention-pooling head; torch.nn.MultiheadAttention packs q/k/v as in_proj_weight (3D, D).
        (r"head\.probe", "head.probe", IDENTITY),
        (r"head\.attention\.in_proj_weight", "head.attention.in_proj.kernel", TRANSPOSE),
        (r"head\.attention\.in_proj_bias", "head.attention.in_proj.bias", IDENTITY),
        (r"head\.attention\.out_proj\.weight", "head.attention.out_proj.kernel", TRANSPOSE),
        (r"head\.attention\.out_proj\.bias", "head.attention.out_proj.bias", IDENTITY),
        (r"head\.layernorm\.weight", "head.layernorm.scale", IDENTITY),
        (r"head\.layernorm\.bias", "head.layernorm.bias", IDENTITY),
        (r"head\.mlp\.(fc1|fc2)\.weight", "head.mlp.{0}.kernel", TRANSPOSE),
        (r"head\.mlp\.(fc1|fc2)\.bias", "head.mlp.{0}.bias", IDENTITY),
    ),
    ignored=(
        r"embeddings\.position_ids",  # a buffer (arange), recomputed
        r"text_model\..*",  # a full SiglipModel's text tower: the student has its own text encoder
        r"logit_scale",  # SiglipModel's contrastive temperature and bias, unused by an embedding student
        r"logit_bias",
    ),
    # transformers < 5 saved SiglipVisionModel under "vision_model."; a full SiglipModel does too.
    prefixes=("vision_model.",),
)
