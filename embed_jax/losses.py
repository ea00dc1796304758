"""The three distillation losses of Jasper & Stella (docs/method.md §3), on the global batch, in fp32.

Every function takes L2-normalised (m, d) arrays: the student's vectors S of one head and the teacher's vectors T
of the same m texts, in the same row order. The whole *global* batch goes in (under `jax.jit` its rows may be
sharded over devices; XLA gathers what it needs), so the value of a batch's loss does not depend on how many devices
share it (docs/method.md §3, last paragraph).

fp32 whatever the input dtype: the relative-similarity margin 0.015 is about four bf16 rounding steps near cosine
0.5-1 (docs/method.md §3 "Numerics"), so every input is cast to fp32 and every Gram matrix is a HIGHEST-precision matmul
(a plain fp32 matmul on TPU runs as one bf16 pass by default).

The relative-similarity loss is computed exactly without the P x P comparison matrix (P = m(m-1)/2): see
`pairwise_hinge_sum` and docs/losses.md.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from embed_jax import contrastive, ranking

# docs/method.md §3.3: the public code's `triplet_margin`.
DEFAULT_MARGIN = 0.015
LOSS_TERMS = ("cosine", "similarity", "relative_similarity")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights and options of `distillation_loss` (docs/method.md §3.4 defaults: 10·cos + 200·sim + 20·resim).

    main_head: the head trained with all three losses (FC1, dim = the teacher's dim); every other head is a
      reduction head trained with similarity + relative similarity only (docs/method.md §4, stage 3). None: every head
      is a reduction head of the given target vectors (shrinking a model with its own vectors as the target).
    reduction_target: "teacher" (the records' vectors, as the paper) or "main_head" (self-distillation,
      docs/method.md §4: the reduction heads learn the Gram matrix of the student's own main-head vectors, held
      constant by stop_gradient).
    ranking_weight, ranking_temperature: the listwise ranking term on the main head (embed_jax/ranking.py); 0 (the
      default) leaves the paper's three losses alone.
    contrastive_weight, contrastive_temperature, contrastive_kl_weight: a pair stage's terms on the main head
      (embed_jax/contrastive.py), added where the batch carries pair labels; set from the stage (kind='pairs').
    matryoshka_dims: increasing widths below the main head's; each prefix of the main head's vector (normalised)
      gets the reduction heads' terms, similarity + relative similarity against the reduction target, so that
      truncating the vector (sentence-transformers' truncate_dim) gives a trained embedding (`matryoshka_terms`).
      Empty: the paper's heads only.
    """

    cosine_weight: float = 10.0
    similarity_weight: float = 200.0
    relative_similarity_weight: float = 20.0
    margin: float = DEFAULT_MARGIN
    main_head: str | None = "fc1"
    reduction_target: str = "teacher"
    matryoshka_dims: tuple[int, ...] = ()
    ranking_weight: float = 0.0
    ranking_temperature: float = ranking.DEFAULT_TEMPERATURE
    contrastive_weight: float = 0.0
    contrastive_temperature: float = contrastive.DEFAULT_TEMPERATURE
    contrastive_kl_weight: float = 0.0

    def __post_init__(self):
        ranking.check_temperature(self.ranking_temperature)
        contrastive.check_temperature(self.contrastive_temperature, "contrastive_temperature")
        for key in ("cosine_weight", "similarity_weight", "relative_similarity_weight", "margin", "ranking_weight",
                    "contrastive_weight", "contrastive_kl_weight"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"loss config key {key!r} must be a finite number >= 0, got {value!r}")
        if self.reduction_target not in ("teacher", "main_head"):
            raise ValueError(
                f"loss config key 'reduction_target' must be 'teacher' or 'main_head', got {self.reduction_target!r}"
            )
        object.__setattr__(self, "matryoshka_dims", check_matryoshka_dims(self.matryoshka_dims))

    @classmethod
    def from_mapping(cls, values: Mapping) -> "LossConfig":
        """Builds from a dict / ml_collections ConfigDict, naming any unknown key."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown loss config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**dict(values))


# ----------------------------------------------------------------------------------------------------------------
# Shared pieces


def _as_fp32_rows(x: jax.Array, name: str) -> jax.Array:
    if x.ndim != 2:
        raise ValueError(f"{name} must be an (m, d) array of vectors, got shape {tuple(x.shape)}")
    return jnp.asarray(x, jnp.float32)


def _check_same_rows(student: jax.Array, teacher: jax.Array) -> None:
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"student has {student.shape[0]} rows but teacher has {teacher.shape[0]}: both must hold the same texts "
            "in the same order"
        )


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Row-wise L2 normalisation in fp32 (eps guards all-zero rows, like torch's F.normalize)."""
    x = jnp.asarray(x, jnp.float32)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(norm, eps)


def gram(x: jax.Array) -> jax.Array:
    """x xᵀ in full fp32 precision: (m, d) -> (m, m)."""
    x = jnp.asarray(x, jnp.float32)
    return jnp.matmul(x, x.T, precision=lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


def upper_triangle(matrix: jax.Array) -> jax.Array:
    """Entries i < j of an (m, m) matrix, row-major: pair index order (0,1), (0,2), …, (1,2), … as the public code's
    boolean triu mask (so that ties break the same way, see `teacher_pair_order`)."""
    rows, cols = np.triu_indices(matrix.shape[0], k=1)
    return matrix[rows, cols]


def num_pairs(m: int) -> int:
    return m * (m - 1) // 2


# ----------------------------------------------------------------------------------------------------------------
# 1. Cosine and 2. similarity


def cosine_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """docs/method.md §3.1: mean over texts of 1 − s·t. Needs d_student = d_teacher (FC1)."""
    student = _as_fp32_rows(student, "student")
    teacher = _as_fp32_rows(teacher, "teacher")
    _check_same_rows(student, teacher)
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(
            f"cosine loss needs student and teacher vectors of the same dim (docs/method.md §3.1), got student dim "
            f"{student.shape[1]} and teacher dim {teacher.shape[1]}: use it on the head whose dim is the teacher's"
        )
    return jnp.mean(1.0 - jnp.sum(student * teacher, axis=-1))


def similarity_loss_from_gram(student_gram: jax.Array, teacher_gram: jax.Array) -> jax.Array:
    """MSE of two (m, m) Gram matrices, mean over all m² entries (diagonal included, as torch's F.mse_loss)."""
    return jnp.mean(jnp.square(student_gram - teacher_gram))


def similarity_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """docs/method.md §3.2: MSE(S Sᵀ, T Tᵀ). Any student dim."""
    student = _as_fp32_rows(student, "student")
    teacher = _as_fp32_rows(teacher, "teacher")
    _check_same_rows(student, teacher)
    return similarity_loss_from_gram(gram(student), gram(teacher))


# ----------------------------------------------------------------------------------------------------------------
# 3. Relative similarity
#
# The public code (RAG-Retrieval model_distill.py, `get_score_diff`) takes the P upper-triangle scores in row-major
# order, forms diff[a, b] = score_b − score_a and keeps a < b (strict upper triangle of the P × P matrix): each
# *unordered* pair of pairs once, P(P−1)/2 terms, and `.mean()` divides by P(P−1)/2, as docs/method.md §3.3 states. Its
# label is +1 where q_b − q_a < 0 (q_a > q_b), else −1, so the term for a < b is
#     relu(p_b − p_a + margin)   if q_a > q_b  (pair a should score higher),
#     relu(p_a − p_b + margin)   otherwise     (ties included: then pair b counts as the higher one).
# Both cases say: "the pair that ranks higher in the strict total order (q, pair index) should score higher".
# So sort the pairs by (q, index) ascending — a stable argsort of q — and call the student scores in that order
# v_1 … v_P; the loss is  Σ_{i<j} relu(v_i − v_j + margin) / (P(P−1)/2),  a hinge over one ordered sequence.


def teacher_pair_order(teacher_pair_scores: jax.Array) -> jax.Array:
    """Pair indices sorted by (teacher score, pair index) ascending: the stable sort breaks ties by pair index,
    which reproduces the public code's tie rule (y = −1 for a < b), see the comment above."""
    return jnp.argsort(teacher_pair_scores, stable=True)


def _pow2_at_least(n: int) -> int:
    return max(2, 1 << (n - 1).bit_length())


def _segmented_suffix_sums(values: jax.Array, log2_segment: jax.Array) -> jax.Array:
    """out[i] = Σ values[i … end of i's aligned segment of 2**log2_segment elements], by doubling: after step t
    each entry holds the sum of the next 2**(t+1) entries of its segment. A tree of additions, so the fp32 error
    grows with log(segment), not with its length as a running cumsum's would."""
    size = values.shape[0]
    index = jnp.arange(size)
    segment_end = ((index >> log2_segment) + 1) << log2_segment

    def add_next(step, sums):
        distance = 1 << step
        shifted = lax.dynamic_slice(jnp.concatenate([sums, jnp.zeros_like(sums)]), (distance,), (size,))
        return jnp.where(index + distance < segment_end, sums + shifted, sums)

    return lax.fori_loop(0, log2_segment, add_next, values)


def _search_segments(sorted_values, start, length, queries, inclusive, steps):
    """Per query, a binary search in its own sorted range sorted_values[start : start + length]: the first position
    whose value is > query (inclusive) or ≥ query (not inclusive), i.e. start + the count of values ≤ / < query.
    `steps` = log2(length) + 1 halvings always suffice; finished searches (lo == hi) stay put."""
    last = sorted_values.shape[0] - 1

    def halve(_, bounds):
        lo, hi = bounds
        mid = (lo + hi) >> 1
        value = sorted_values[jnp.minimum(mid, last)]
        searching = lo < hi
        go_right = searching & jnp.where(inclusive, value <= queries, value < queries)
        go_left = searching & ~go_right
        return jnp.where(go_right, mid + 1, lo), jnp.where(go_left, mid, hi)

    lo, _ = lax.fori_loop(0, steps, halve, (start, start + length))
    return lo


def _hinge_sum_and_counts(values: jax.Array, margin: float) -> tuple[jax.Array, jax.Array]:
    """Σ_{i<j} relu(v_i − v_j + margin) and its gradient, exactly, in O(P log² P) time and O(P) memory.

    A bottom-up merge sort that counts, like the classic inversion count. At level k the array is cut into aligned
    segments of 2**k original positions, each already sorted by value; a segment and its sibling form a block of
    2**(k+1), and every pair i < j is split between a left and a right sibling at exactly one level. There, for a
    right element j, the active i (hinge > 0) are the left values above the threshold v_j − margin: a binary search
    in the sorted left sibling gives their count, and the left sibling's suffix sums give their sum, so their hinge
    sum is `sum − count · threshold`. No comparison matrix is formed. Then the two siblings are merged (each
    element's new place = its rank in its own segment + its rank in the sibling) and the next level starts.

    The gradient is an integer count per element: +1 for each active pair in which it is the left (lower-ranked)
    element, −1 for each in which it is the right one; it is accumulated alongside and moved with each merge.
    Padding to a power of two appends +inf values; real elements never find them active, and they are masked as
    right elements. One `fori_loop` over the levels keeps the compiled program small whatever P is.
    """
    num_values = values.shape[0]
    size = _pow2_at_least(num_values)
    # Centering changes no difference v_i − v_j but keeps the suffix sums small, so fp32 cancels less.
    padded = jnp.concatenate([values - jnp.mean(values), jnp.full((size - num_values,), jnp.inf, jnp.float32)])
    place = jnp.arange(size, dtype=jnp.int32)

    def merge_level(k, carry):
        total, sorted_values, original_index, counts = carry
        half = 1 << k
        segment = place >> k
        is_right = (segment & 1) == 1
        sibling_start = jnp.where(is_right, (segment - 1) << k, (segment + 1) << k)

        # Right element j: left values ≤ v_j − margin are inactive. Left element i: right values < v_i + margin
        # are active. Both are the same comparison v_i > v_j − margin, seen from either side.
        thresholds = jnp.where(is_right, sorted_values - margin, sorted_values + margin)
        # One search for two questions (one loop to compile): the thresholds, and the values themselves for the
        # merge below, where equal values put the left sibling's first (strict count for left, inclusive for
        # right), so that the new places form a permutation.
        found, merge_found = jnp.split(
            _search_segments(
                sorted_values,
                jnp.tile(sibling_start, 2),
                half,
                jnp.concatenate([thresholds, sorted_values]),
                jnp.tile(is_right, 2),
                k + 1,
            ),
            2,
        )
        in_sibling_below = found - sibling_start
        active_left = half - in_sibling_below
        suffix_sums = _segmented_suffix_sums(sorted_values, k)
        active_left_sum = jnp.where(active_left > 0, suffix_sums[jnp.minimum(found, size - 1)], 0.0)
        is_real_right = is_right & (original_index < num_values)
        hinge = active_left_sum - active_left.astype(jnp.float32) * thresholds
        total = total + jnp.sum(jnp.where(is_real_right, hinge, 0.0))
        counts = counts + jnp.where(is_right, -jnp.where(is_real_right, active_left, 0), in_sibling_below)

        # Merge: each element's place in the merged block = its rank in its own segment + its rank in the sibling.
        new_place = ((segment >> 1) << (k + 1)) + (place & (half - 1)) + merge_found - sibling_start

        def move(array):
            return jnp.zeros_like(array).at[new_place].set(array, unique_indices=True)

        return total, move(sorted_values), move(original_index), move(counts)

    initial = (jnp.zeros((), jnp.float32), padded, place, jnp.zeros((size,), jnp.int32))
    num_levels = size.bit_length() - 1
    total, _, original_index, counts = lax.fori_loop(0, num_levels, merge_level, initial)
    counts_by_original = jnp.zeros((size,), jnp.int32).at[original_index].set(counts, unique_indices=True)
    return total, counts_by_original[:num_values]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def pairwise_hinge_sum(values: jax.Array, margin: float) -> jax.Array:
    """Σ_{i<j} relu(values_i − values_j + margin) over a 1-D fp32 array, with an exact gradient.

    A custom VJP: the forward pass already yields the gradient (integer counts), so the backward pass keeps
    P int32 and does no work (reverse-mode autodiff cannot go through the merge loop's searches anyway).
    """
    total, _ = _hinge_sum_and_counts(values, margin)
    return total


def _pairwise_hinge_sum_fwd(values, margin):
    total, counts = _hinge_sum_and_counts(values, margin)
    return total, counts


def _pairwise_hinge_sum_bwd(margin, counts, cotangent):
    del margin
    return (cotangent * counts.astype(jnp.float32),)


pairwise_hinge_sum.defvjp(_pairwise_hinge_sum_fwd, _pairwise_hinge_sum_bwd)


def relative_similarity_loss_from_pairs(
    student_pair_scores: jax.Array, teacher_order: jax.Array, margin: float = DEFAULT_MARGIN
) -> jax.Array:
    """The loss from student pair scores (P,) — or (H, P) for H heads at once — and the teacher's pair order(s)
    (`teacher_pair_order`, same leading shape). Several heads share one compiled merge loop (vmap), so a student
    with four heads compiles it once, not four times."""
    num = student_pair_scores.shape[-1]
    if num < 2:
        raise ValueError(
            f"relative similarity compares pairs of text pairs: it needs at least 3 texts in the global batch "
            f"(got {num} pair(s))"
        )
    ranked = jnp.take_along_axis(jnp.asarray(student_pair_scores, jnp.float32), teacher_order, axis=-1)
    margin = float(margin)

    def hinge_sum(values):
        return pairwise_hinge_sum(values, margin)

    for _ in range(ranked.ndim - 1):
        hinge_sum = jax.vmap(hinge_sum)
    # The count of pairs-of-pairs is an exact Python int; as fp32 it is within 1 ulp (8.6e9 at m = 512).
    return hinge_sum(ranked) / float(num * (num - 1) // 2)


def relative_similarity_loss(student: jax.Array, teacher: jax.Array, margin: float = DEFAULT_MARGIN) -> jax.Array:
    """docs/method.md §3.3: mean over all P(P−1)/2 unordered pairs of text pairs of relu(y·(p_b − p_a) + margin).

    Exact (ties included, as the public code) and without the P × P matrix: O(P) memory, O(P log² P) time.
    The teacher side gets no gradient (the loss is piecewise constant in it).
    """
    student = _as_fp32_rows(student, "student")
    teacher = _as_fp32_rows(teacher, "teacher")
    _check_same_rows(student, teacher)
    teacher_order = teacher_pair_order(upper_triangle(lax.stop_gradient(gram(teacher))))
    return relative_similarity_loss_from_pairs(upper_triangle(gram(student)), teacher_order, margin)


# ----------------------------------------------------------------------------------------------------------------
# The combination per head


def distillation_loss(
    student_heads: Mapping[str, jax.Array], teacher: jax.Array, config: LossConfig | Mapping | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Total loss and each unweighted term, per head: {"fc1/cosine": …, "fc1/similarity": …, "fc2/…": …}.

    The main head (config.main_head, FC1) gets cosine + similarity + relative similarity against the teacher;
    every other head gets similarity + relative similarity against the reduction target (docs/method.md §4, stage 3).
    Head outputs and teacher vectors are (re-)normalised here in fp32, so raw or normalised inputs both work.
    The total sums the heads' weighted terms: each head's terms keep the paper's weights whatever heads train
    (the public code instead averages prefix dims of one Matryoshka head; the paper's heads are independent).
    """
    if config is None:
        config = LossConfig()
    elif not isinstance(config, LossConfig):
        config = LossConfig.from_mapping(config)
    if not student_heads:
        raise ValueError("distillation_loss got no student heads")
    if config.main_head is None and config.reduction_target != "teacher":
        raise ValueError("loss config: with no main head (main_head=None: every head is a reduction head) the "
                         "reduction target must be 'teacher' (the given target vectors)")
    if config.main_head is not None and config.main_head not in student_heads:
        raise ValueError(
            f"loss config key 'main_head' is {config.main_head!r} but the student's heads are "
            f"{sorted(student_heads)}: set it to the head whose dim is the teacher's"
        )
    teacher_vectors = l2_normalize(_as_fp32_rows(teacher, "teacher"))
    heads = {name: l2_normalize(_as_fp32_rows(x, f"head {name!r}")) for name, x in student_heads.items()}
    for name, vectors in heads.items():
        _check_same_rows(vectors, teacher_vectors)

    teacher_gram = lax.stop_gradient(gram(teacher_vectors))
    if config.reduction_target == "main_head":
        reduction_gram = lax.stop_gradient(gram(heads[config.main_head]))
    else:
        reduction_gram = teacher_gram
    teacher_order = teacher_pair_order(upper_triangle(teacher_gram))
    reduction_order = teacher_order if reduction_gram is teacher_gram else teacher_pair_order(
        upper_triangle(reduction_gram)
    )

    names = list(heads)
    student_grams = {name: gram(heads[name]) for name in names}
    orders = [teacher_order if name == config.main_head else reduction_order for name in names]
    relative = relative_similarity_loss_from_pairs(
        jnp.stack([upper_triangle(student_grams[name]) for name in names]), jnp.stack(orders), config.margin
    )

    terms: dict[str, jax.Array] = {}
    total = jnp.zeros((), jnp.float32)
    for index, name in enumerate(names):
        is_main = name == config.main_head
        if is_main:
            terms[f"{name}/cosine"] = cosine_loss(heads[name], teacher_vectors)
            total = total + config.cosine_weight * terms[f"{name}/cosine"]
            if config.ranking_weight:
                terms[f"{name}/ranking"] = ranking.listwise_kl_from_grams(student_grams[name], teacher_gram,
                                                                          config.ranking_temperature)
                total = total + config.ranking_weight * terms[f"{name}/ranking"]
        terms[f"{name}/similarity"] = similarity_loss_from_gram(
            student_grams[name], teacher_gram if is_main else reduction_gram
        )
        terms[f"{name}/relative_similarity"] = relative[index]
        total = total + config.similarity_weight * terms[f"{name}/similarity"]
        total = total + config.relative_similarity_weight * terms[f"{name}/relative_similarity"]
    if config.matryoshka_dims:
        prefix_total, prefix_terms = matryoshka_terms(heads[_matryoshka_head(config)], reduction_gram,
                                                      reduction_order, config)
        total, terms = total + prefix_total, {**terms, **prefix_terms}
    return total, terms


# ----------------------------------------------------------------------------------------------------------------
# Matryoshka prefixes of the main head (loss.matryoshka_dims)
#
# The paper's reduction heads are separate projections (docs/method.md §4, stage 3), so the first d dims of FC1's
# vector are not a d-dim embedding. With matryoshka_dims, each prefix FC1[:d] (renormalised) is trained as a
# reduction head would be: similarity + relative similarity against the reduction target, at the same weights. Then
# sentence-transformers' truncate_dim=d on the exported folder gives that trained prefix.

MATRYOSHKA_KEY = "loss.matryoshka_dims"


def check_matryoshka_dims(dims, main_dim: int | None = None) -> tuple[int, ...]:
    """The dims as a tuple of ints; a ValueError naming loss.matryoshka_dims unless they are whole numbers ≥ 1,
    strictly increasing and (main_dim given) below the main head's width."""
    dims = tuple(dims or ())
    if any(isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1 for dim in dims):
        raise ValueError(f"config key {MATRYOSHKA_KEY}={dims!r}: each must be a whole number ≥ 1, e.g. "
                         f"--config.{MATRYOSHKA_KEY}='(128, 256)'")
    if any(later <= earlier for earlier, later in zip(dims, dims[1:])):
        raise ValueError(f"config key {MATRYOSHKA_KEY}={dims!r}: the prefix widths must be strictly increasing, "
                         f"e.g. {tuple(sorted(set(dims)))}")
    if main_dim is not None and dims and dims[-1] >= main_dim:
        raise ValueError(f"config key {MATRYOSHKA_KEY}={dims!r}: every prefix must be narrower than FC1, the head "
                         f"they are prefixes of (model.teacher_dim={main_dim}); drop {dims[-1]}")
    return tuple(int(dim) for dim in dims)


def matryoshka_head_name(name: str, dim: int) -> str:
    """The loss terms' name of a prefix: 'dense_1152[:256]/similarity', ..."""
    return f"{name}[:{dim}]"


def _matryoshka_head(config: LossConfig) -> str:
    if config.main_head is None:
        raise ValueError(f"config key {MATRYOSHKA_KEY}: prefixes are taken of the main head (FC1), and this loss has "
                         "none (shrinking a model with its own vectors); train separate heads with "
                         "model.reduction_dims instead")
    return config.main_head


def matryoshka_terms(main_vectors: jax.Array, target_gram: jax.Array, target_order: jax.Array, config: LossConfig
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted sum and unweighted terms of every prefix in config.matryoshka_dims of the (normalised) main head's
    vectors: similarity to `target_gram` and relative similarity in `target_order` (its pair order)."""
    name = _matryoshka_head(config)
    check_matryoshka_dims(config.matryoshka_dims, int(main_vectors.shape[1]))
    prefixes = {dim: l2_normalize(main_vectors[:, :dim]) for dim in config.matryoshka_dims}
    grams = {dim: gram(vectors) for dim, vectors in prefixes.items()}
    relative = relative_similarity_loss_from_pairs(
        jnp.stack([upper_triangle(grams[dim]) for dim in prefixes]),
        jnp.broadcast_to(target_order, (len(prefixes), *target_order.shape)), config.margin)
    terms: dict[str, jax.Array] = {}
    total = jnp.zeros((), jnp.float32)
    for index, dim in enumerate(prefixes):
        prefix = matryoshka_head_name(name, dim)
        terms[f"{prefix}/similarity"] = similarity_loss_from_gram(grams[dim], target_gram)
        terms[f"{prefix}/relative_similarity"] = relative[index]
        total = total + (config.similarity_weight * terms[f"{prefix}/similarity"]
                         + config.relative_similarity_weight * terms[f"{prefix}/relative_similarity"])
    return total, terms


# ----------------------------------------------------------------------------------------------------------------
# Stage 4: image vectors against their captions' vectors, through every head


def image_caption_loss(
    image_heads: Mapping[str, jax.Array], caption_heads: Mapping[str, jax.Array], config: LossConfig | Mapping | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """docs/method.md §4, stage 4: per head, cosine + similarity + relative similarity between the images' vectors
    (student) and their captions' vectors through the same head (teacher), weighted as docs/method.md §3.4; the total is
    the mean of the heads' weighted sums, so adding a head does not scale the loss. Terms are named like
    `distillation_loss`'s: {"dense_1152/cosine": …, …}. `config.main_head` and `reduction_target` do not apply (every
    head is its own main head); the weights and the margin do. Both sides are (re-)normalised in fp32.
    """
    if config is None:
        config = LossConfig()
    elif not isinstance(config, LossConfig):
        config = LossConfig.from_mapping(config)
    if not image_heads:
        raise ValueError("image_caption_loss got no image heads")
    if sorted(image_heads) != sorted(caption_heads):
        raise ValueError(f"image heads {sorted(image_heads)} and caption heads {sorted(caption_heads)} differ: each "
                         "head's image vectors are compared with the same head's caption vectors")
    names = list(image_heads)
    images = {name: l2_normalize(_as_fp32_rows(image_heads[name], f"image head {name!r}")) for name in names}
    captions = {name: l2_normalize(_as_fp32_rows(caption_heads[name], f"caption head {name!r}")) for name in names}
    caption_grams = {name: lax.stop_gradient(gram(captions[name])) for name in names}
    image_grams = {name: gram(images[name]) for name in names}
    relative = relative_similarity_loss_from_pairs(
        jnp.stack([upper_triangle(image_grams[name]) for name in names]),
        jnp.stack([teacher_pair_order(upper_triangle(caption_grams[name])) for name in names]),
        config.margin,
    )
    terms: dict[str, jax.Array] = {}
    total = jnp.zeros((), jnp.float32)
    for index, name in enumerate(names):
        terms[f"{name}/cosine"] = cosine_loss(images[name], lax.stop_gradient(captions[name]))
        terms[f"{name}/similarity"] = similarity_loss_from_gram(image_grams[name], caption_grams[name])
        terms[f"{name}/relative_similarity"] = relative[index]
        total = total + (config.cosine_weight * terms[f"{name}/cosine"]
                         + config.similarity_weight * terms[f"{name}/similarity"]
                         + config.relative_similarity_weight * terms[f"{name}/relative_similarity"])
    return total / len(names), terms
