"""Name table: Hugging Face BertModel / RobertaModel / XLMRobertaModel ↔ embed_jax.models.bert.BertModel."""
from embed_jax.models.tables import IDENTITY, TRANSPOSE, Table

_LAYER = r"encoder\.layer\.(\d+)\."
_NORM = r"(weight|gamma)"  # checkpoints from before PyTorch's rename call LayerNorm scale 'gamma' and bias 'beta'
_BIAS = r"(bias|beta)"

TABLE = Table(
    family="bert",
    rules=(
        (r"embeddings\.word_embeddings\.weight", "embeddings.word_embeddings.embedding", IDENTITY),
        (r"embeddings\.position_embeddings\.weight", "embeddings.position_embeddings.embedding", IDENTITY),
        (r"embeddings\.token_type_embeddings\.weight", "embeddings.token_type_embeddings.embedding", IDENTITY),
        (rf"embeddings\.LayerNorm\.{_NORM}", "embeddings.LayerNorm.scale", IDENTITY),
        (rf"embeddings\.LayerNorm\.{_BIAS}", "embeddings.LayerNorm.bias", IDENTITY),
        (_LAYER + r"attention\.self\.(query|key|value)\.weight", "encoder.layer.{0}.attention.self.{1}.kernel", TRANSPOSE),
        (_LAYER + r"attention\.self\.(query|key|value)\.bias", "encoder.layer.{0}.attention.self.{1}.bias", IDENTITY),
        (_LAYER + r"(attention\.output|output)\.dense\.weight", "encoder.layer.{0}.{1}.dense.kernel", TRANSPOSE),
        (_LAYER + r"(attention\.output|output)\.dense\.bias", "encoder.layer.{0}.{1}.dense.bias", IDENTITY),
        (_LAYER + rf"(attention\.output|output)\.LayerNorm\.{_NORM}", "encoder.layer.{0}.{1}.LayerNorm.scale", IDENTITY),
        (_LAYER + rf"(attention\.output|output)\.LayerNorm\.{_BIAS}", "encoder.layer.{0}.{1}.LayerNorm.bias", IDENTITY),
        (_LAYER + r"intermediate\.dense\.weight", "encoder.layer.{0}.intermediate.dense.kernel", TRANSPOSE),
        (_LAYER + r"intermediate\.dense\.bias", "encoder.layer.{0}.intermediate.dense.bias", IDENTITY),
    ),
    ignored=(
        r"embeddings\.position_ids",  # a buffer (arange), recomputed
        r"embeddings\.token_type_ids",  # a buffer (zeros), recomputed
        r"pooler\..*",  # [CLS] dense + tanh: embedding models pool the hidden states themselves
        r"(cls|lm_head)\..*",  # masked-LM / next-sentence heads of *ForMaskedLM / *ForPreTraining checkpoints
    ),
    prefixes=("bert.", "roberta.", "model."),
)
