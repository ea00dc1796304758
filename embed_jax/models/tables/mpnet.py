"""Name table: Hugging Face MPNetModel / MPNetForMaskedLM ↔ embed_jax.models.mpnet.MPNetModel.

Every tensor of a sentence-transformers MPNet folder (all-mpnet-base-v2: 200 tensors) is either mapped or knowingly
ignored: the embeddings, every layer's q/k/v/o, LayerNorms and feed-forward, and the encoder's shared
`relative_attention_bias` map one to one; the `position_ids` buffer and the [CLS] pooler (dense + tanh, unused by
mean-pooling embedding models; BERT's table drops it the same way) are ignored on import.
"""
from embed_jax.models.tables import IDENTITY, TRANSPOSE, Table

_LAYER = r"encoder\.layer\.(\d+)\."

TABLE = Table(
    family="mpnet",
    rules=(
        (r"embeddings\.word_embeddings\.weight", "embeddings.word_embeddings.embedding", IDENTITY),
        (r"embeddings\.position_embeddings\.weight", "embeddings.position_embeddings.embedding", IDENTITY),
        (r"embeddings\.LayerNorm\.weight", "embeddings.LayerNorm.scale", IDENTITY),
        (r"embeddings\.LayerNorm\.bias", "embeddings.LayerNorm.bias", IDENTITY),
        (r"encoder\.relative_attention_bias\.weight", "encoder.relative_attention_bias.embedding", IDENTITY),
        (_LAYER + r"attention\.attn\.(q|k|v|o)\.weight", "encoder.layer.{0}.attention.attn.{1}.kernel", TRANSPOSE),
        (_LAYER + r"attention\.attn\.(q|k|v|o)\.bias", "encoder.layer.{0}.attention.attn.{1}.bias", IDENTITY),
        (_LAYER + r"(attention|output)\.LayerNorm\.weight", "encoder.layer.{0}.{1}.LayerNorm.scale", IDENTITY),
        (_LAYER + r"(attention|output)\.LayerNorm\.bias", "encoder.layer.{0}.{1}.LayerNorm.bias", IDENTITY),
        (_LAYER + r"(intermediate|output)\.dense\.weight", "encoder.layer.{0}.{1}.dense.kernel", TRANSPOSE),
        (_LAYER + r"(intermediate|output)\.dense\.bias", "encoder.layer.{0}.{1}.dense.bias", IDENTITY),
    ),
    ignored=(
        r"embeddings\.position_ids",  # a buffer (arange), recomputed
        r"pooler\..*",  # [CLS] dense + tanh: embedding models pool the hidden states themselves
        r"lm_head\..*",  # the masked-LM head of an MPNetForMaskedLM checkpoint
    ),
    prefixes=("mpnet.",),
)
