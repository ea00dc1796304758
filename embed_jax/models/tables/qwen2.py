"""Name table: Hugging Face Qwen2Model / Qwen2ForCausalLM ↔ embed_jax.models.qwen2.Qwen2Model."""
from embed_jax.models.tables import IDENTITY, TRANSPOSE, Table

_LAYER = r"layers\.(\d+)\."

TABLE = Table(
    family="qwen2",
    rules=(
        (r"embed_tokens\.weight", "embed_tokens.embedding", IDENTITY),
        (_LAYER + r"self_attn\.([qkvo])_proj\.weight", "layers.{0}.self_attn.{1}_proj.kernel", TRANSPOSE),
        (_LAYER + r"self_attn\.([qkv])_proj\.bias", "layers.{0}.self_attn.{1}_proj.bias", IDENTITY),
        (_LAYER + r"mlp\.(gate|up|down)_proj\.weight", "layers.{0}.mlp.{1}_proj.kernel", TRANSPOSE),
        (_LAYER + r"(input_layernorm|post_attention_layernorm)\.weight", "layers.{0}.{1}.scale", IDENTITY),
        (r"norm\.weight", "norm.scale", IDENTITY),
    ),
    ignored=(
        r"lm_head\..*",  # next-token head of Qwen2ForCausalLM: unused by an embedding encoder
        r"(score|classifier)\..*",  # heads of sequence/token classification checkpoints
    ),
    prefixes=("model.",),
)
