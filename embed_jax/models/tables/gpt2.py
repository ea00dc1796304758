"""Name table: Hugging Face GPT2Model / GPT2LMHeadModel ↔ embed_jax.models.gpt2.GPT2Model.

GPT-2's projections are Conv1D modules whose weight is already (in, out): no transposes. The fused q/k/v projection
(embed, 3·embed) is reshaped to (embed, 3, embed) (see embed_jax/models/gpt2.py for why).
"""
from embed_jax.models.tables import IDENTITY, RESHAPE, Table

_LAYER = r"h\.(\d+)\."

TABLE = Table(
    family="gpt2",
    rules=(
        (r"wte\.weight", "wte.embedding", IDENTITY),
        (r"wpe\.weight", "wpe.embedding", IDENTITY),
        (_LAYER + r"(ln_1|ln_2)\.weight", "h.{0}.{1}.scale", IDENTITY),
        (_LAYER + r"(ln_1|ln_2)\.bias", "h.{0}.{1}.bias", IDENTITY),
        (_LAYER + r"attn\.c_attn\.weight", "h.{0}.attn.c_attn.kernel", RESHAPE),
        (_LAYER + r"attn\.c_attn\.bias", "h.{0}.attn.c_attn.bias", RESHAPE),
        (_LAYER + r"(attn|mlp)\.c_proj\.weight", "h.{0}.{1}.c_proj.kernel", IDENTITY),
        (_LAYER + r"(attn|mlp)\.c_proj\.bias", "h.{0}.{1}.c_proj.bias", IDENTITY),
        (_LAYER + r"mlp\.c_fc\.weight", "h.{0}.mlp.c_fc.kernel", IDENTITY),
        (_LAYER + r"mlp\.c_fc\.bias", "h.{0}.mlp.c_fc.bias", IDENTITY),
        (r"ln_f\.weight", "ln_f.scale", IDENTITY),
        (r"ln_f\.bias", "ln_f.bias", IDENTITY),
    ),
    ignored=(
        _LAYER + r"attn\.(bias|masked_bias)",  # causal-mask buffers saved by old transformers versions
        r"lm_head\..*",  # next-token head of GPT2LMHeadModel
        r"(score|classifier)\..*",
    ),
    prefixes=("transformer.",),
)
