"""The three losses against brute-force references of docs/method.md §3 (NumPy
float64 and the public code's torch formula).

The relative-similarity loss is checked on batches with tied teacher scores (duplicate texts, and teacher vectors
drawn from a few one-hot directions), since ties are where an order-based rewrite can go wrong.
"""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from jax.sharding import NamedSharding, PartitionSpec

from embed_jax import losses
from parity import assert_trees_close

MARGIN = 0.015
# Jitted once per shape: eager calls would compile every op (and each merge loop) separately.
distillation_loss = jax.jit(losses.distillation_loss, static_argnums=2)
relative_similarity_loss = jax.jit(losses.relative_similarity_loss, static_argnums=2)


def normalized(rng, m, d):
    x = rng.normal(size=(m, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def tied_teacher(rng, m, d):
    """Teacher vectors with many exactly tied pair scores: rows 0 and 1 are the same text, and the rest point
    along 3 one-hot directions (pair scores exactly 0 or 1)."""
    t = np.zeros((m, d), np.float32)
    t[np.arange(m), rng.integers(0, 3, size=m)] = 1.0
    t[1] = t[0]
    return t


# ---------------------------------------------------------------------------------------------------------------
# References


def resim_reference_loops(student, teacher, margin=MARGIN):
    """docs/method.md §3.3 word by word, in float64: all P pairs i<j, every unordered pair of pairs (a, b), a < b."""
    s, t = np.asarray(student, np.float64), np.asarray(teacher, np.float64)
    pairs = [(i, j) for i in range(len(s)) for j in range(i + 1, len(s))]
    p = [s[i] @ s[j] for i, j in pairs]
    q = [t[i] @ t[j] for i, j in pairs]
    terms = []
    for a, b in itertools.combinations(range(len(pairs)), 2):
        y = 1.0 if q[a] > q[b] else -1.0
        terms.append(max(0.0, y * (p[b] - p[a]) + margin))
    return np.mean(terms)


def resim_reference_public_code(student, teacher, margin=MARGIN):
    """The public code's formulation (RAG-Retrieval model_distill.py get_score_diff + triplet loss), in torch."""

    def score_diff(embedding):
        scores = embedding @ embedding.T
        scores = scores[torch.triu(torch.ones_like(scores), diagonal=1).bool()]
        diff = scores.reshape((1, -1)) - scores.reshape((-1, 1))
        return diff[torch.triu(torch.ones_like(diff), diagonal=1).bool()]

    s, t = torch.tensor(np.asarray(student, np.float64)), torch.tensor(np.asarray(teacher, np.float64))
    label = torch.where(score_diff(t) < 0, 1, -1)
    return F.relu(score_diff(s) * label + margin).mean().item()


def resim_bruteforce_jnp(student, teacher, margin=MARGIN):
    """The P x P formulation in jnp, for autodiff gradients to compare against. Full-precision matmuls: a GPU's
    default (TF32) or a TPU's (bf16 passes) would move scores across the hinge and make the reference the wrong one."""
    m = student.shape[0]
    rows, cols = np.triu_indices(m, k=1)
    p = jnp.matmul(student, student.T, precision="highest")[rows, cols]
    q = jnp.matmul(teacher, teacher.T, precision="highest")[rows, cols]
    a, b = np.triu_indices(p.shape[0], k=1)
    y = jnp.where(q[a] > q[b], 1.0, -1.0)
    return jnp.mean(jax.nn.relu(y * (p[b] - p[a]) + margin))


# ---------------------------------------------------------------------------------------------------------------
# Relative similarity


@pytest.mark.parametrize("m", [3, 4, 7, 12])
@pytest.mark.parametrize("teacher_kind", ["random", "tied"])
def test_relative_similarity_matches_spec_and_public_code(m, teacher_kind):
    rng = np.random.default_rng(m)
    student = normalized(rng, m, 16)
    teacher = normalized(rng, m, 24) if teacher_kind == "random" else tied_teacher(rng, m, 24)
    expected = resim_reference_loops(student, teacher)
    np.testing.assert_allclose(resim_reference_public_code(student, teacher), expected, rtol=1e-12)
    got = relative_similarity_loss(student, teacher, MARGIN)
    np.testing.assert_allclose(float(got), expected, rtol=2e-6, atol=1e-8)


def test_tied_teacher_batch_really_has_ties_and_they_matter():
    """Guards the test data: the tie rule must change the loss on it (else the tie test proves nothing)."""
    rng = np.random.default_rng(1)
    student, teacher = normalized(rng, 10, 16), tied_teacher(rng, 10, 24)
    rows, cols = np.triu_indices(10, k=1)
    q = (teacher @ teacher.T)[rows, cols]
    assert len(np.unique(q)) < len(q) // 4
    flipped_ties = resim_reference_loops(student, teacher) != pytest.approx(
        resim_reference_loops(student[::-1], teacher[::-1])
    )
    assert flipped_ties  # reversing the texts reverses the tie-break, and the loss moves


@pytest.mark.parametrize("teacher_kind", ["random", "tied"])
def test_relative_similarity_gradient_matches_bruteforce(teacher_kind):
    rng = np.random.default_rng(3)
    student = normalized(rng, 11, 8)
    teacher = normalized(rng, 11, 12) if teacher_kind == "random" else tied_teacher(rng, 11, 12)
    ours = jax.jit(jax.grad(losses.relative_similarity_loss))(student, teacher)
    reference = jax.grad(resim_bruteforce_jnp)(jnp.asarray(student), jnp.asarray(teacher))
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("size, margin", [(2, 0.015), (3, 0.015), (8, 0.0), (9, 0.5), (100, 0.015), (100, 0.0)])
def test_pairwise_hinge_sum_exact_value_and_gradient(size, margin):
    rng = np.random.default_rng(size)
    values = np.round(rng.normal(0.3, 0.2, size), 2).astype(np.float32)  # rounded: many equal values
    v64 = values.astype(np.float64)
    diff = v64[:, None] - v64[None, :] + margin
    active = (diff > 0) & np.triu(np.ones((size, size), bool), k=1)
    total, grad = jax.jit(jax.value_and_grad(losses.pairwise_hinge_sum), static_argnums=1)(values, margin)
    np.testing.assert_allclose(float(total), (diff * active).sum(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(grad), active.sum(1) - active.sum(0))


def test_relative_similarity_never_builds_the_pair_of_pairs_matrix():
    """At m = 128 one P x P fp32 tensor is 264 MB; the compiled fwd+bwd must need a small fraction of that."""
    m, d = 128, 64
    num = losses.num_pairs(m)
    student = jax.ShapeDtypeStruct((m, d), jnp.float32)
    compiled = jax.jit(jax.value_and_grad(losses.relative_similarity_loss)).lower(student, student).compile()
    analysis = compiled.memory_analysis()
    assert analysis.temp_size_in_bytes < num * num * 4 / 100


def test_relative_similarity_needs_three_texts():
    x = normalized(np.random.default_rng(0), 2, 4)
    with pytest.raises(ValueError, match="at least 3 texts"):
        losses.relative_similarity_loss(x, x)


# ---------------------------------------------------------------------------------------------------------------
# Cosine and similarity


def test_cosine_and_similarity_match_torch():
    rng = np.random.default_rng(5)
    student, teacher = normalized(rng, 9, 32), normalized(rng, 9, 32)
    s, t = torch.tensor(student, dtype=torch.float64), torch.tensor(teacher, dtype=torch.float64)
    expected_cos = F.cosine_embedding_loss(s, t, torch.ones(9, dtype=torch.float64)).item()
    expected_sim = F.mse_loss(s @ s.T, t @ t.T).item()
    np.testing.assert_allclose(float(losses.cosine_loss(student, teacher)), expected_cos, rtol=1e-6)
    np.testing.assert_allclose(float(losses.similarity_loss(student, teacher)), expected_sim, rtol=1e-5)


def test_similarity_works_across_dims():
    rng = np.random.default_rng(6)
    student, teacher = normalized(rng, 6, 8), normalized(rng, 6, 40)
    expected = np.mean((student @ student.T - teacher @ teacher.T) ** 2)
    np.testing.assert_allclose(float(losses.similarity_loss(student, teacher)), expected, rtol=1e-5)


def test_losses_compute_in_fp32_from_bf16_inputs():
    rng = np.random.default_rng(7)
    student, teacher = normalized(rng, 8, 16), normalized(rng, 8, 16)
    student_bf16 = jnp.asarray(student, jnp.bfloat16)
    upcast = np.asarray(student_bf16.astype(jnp.float32))
    for loss in (losses.cosine_loss, losses.similarity_loss, losses.relative_similarity_loss):
        loss = jax.jit(loss)
        got = loss(student_bf16, teacher)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(float(got), float(loss(upcast, teacher)), rtol=1e-6)


@pytest.mark.parametrize(
    "student_shape, teacher_shape, message",
    [((4, 8), (5, 8), "same texts"), ((4, 8), (4, 6), "same dim"), ((8,), (4, 8), r"\(m, d\) array")],
)
def test_cosine_loss_bad_shapes(student_shape, teacher_shape, message):
    with pytest.raises(ValueError, match=message):
        losses.cosine_loss(jnp.ones(student_shape), jnp.ones(teacher_shape))


# ---------------------------------------------------------------------------------------------------------------
# Global batch: sharded rows give the unsharded value


@pytest.mark.slow
@pytest.mark.parametrize("config", [
    losses.LossConfig(),
    losses.LossConfig(matryoshka_dims=(6, 12)),  # prefix terms (embed_jax/losses.py)
    losses.LossConfig(cosine_weight=0.0, similarity_weight=0.0, relative_similarity_weight=0.0, ranking_weight=1.0),
], ids=["cosine+similarity+relative", "matryoshka", "ranking"])
def test_losses_equal_on_one_and_eight_devices(config):
    assert jax.device_count() >= 8, "tests/conftest.py sets 8 simulated CPU devices"
    rng = np.random.default_rng(8)
    heads = {"fc1": normalized(rng, 32, 24), "fc2": normalized(rng, 32, 8)}
    teacher = normalized(rng, 32, 24)

    def loss_fn(heads, teacher):
        return losses.distillation_loss(heads, teacher, config)

    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    rows = NamedSharding(mesh, PartitionSpec("data"))
    single = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(heads, teacher)
    sharded = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(*jax.device_put((heads, teacher), rows))
    assert len(sharded[1]["fc1"].sharding.device_set) == 8
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-6), single, sharded)


# ---------------------------------------------------------------------------------------------------------------
# distillation_loss


def test_distillation_loss_terms_and_total():
    rng = np.random.default_rng(9)
    teacher = normalized(rng, 10, 24)
    heads = {"fc1": normalized(rng, 10, 24), "fc2": normalized(rng, 10, 8)}
    config = losses.LossConfig(cosine_weight=1.5, similarity_weight=3.0, relative_similarity_weight=7.0)
    total, terms = distillation_loss(heads, teacher, config)
    assert sorted(terms) == [
        "fc1/cosine", "fc1/relative_similarity", "fc1/similarity", "fc2/relative_similarity", "fc2/similarity"
    ]
    np.testing.assert_allclose(float(terms["fc1/cosine"]), float(losses.cosine_loss(heads["fc1"], teacher)), rtol=1e-6)
    for name in heads:
        np.testing.assert_allclose(
            float(terms[f"{name}/relative_similarity"]), resim_reference_loops(heads[name], teacher), rtol=2e-6
        )
    expected = (
        1.5 * terms["fc1/cosine"]
        + 3.0 * (terms["fc1/similarity"] + terms["fc2/similarity"])
        + 7.0 * (terms["fc1/relative_similarity"] + terms["fc2/relative_similarity"])
    )
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-6)


def test_distillation_loss_gradient_over_several_heads_matches_bruteforce():
    """All heads' relative-similarity terms share one batched merge loop: its gradient is each head's own."""
    rng = np.random.default_rng(13)
    teacher = tied_teacher(rng, 9, 12)
    heads = {"fc1": normalized(rng, 9, 12), "fc2": normalized(rng, 9, 4), "fc3": normalized(rng, 9, 6)}
    config = losses.LossConfig(cosine_weight=0.0, similarity_weight=0.0, relative_similarity_weight=1.0)
    ours = jax.jit(jax.grad(lambda heads: losses.distillation_loss(heads, teacher, config)[0]))(heads)

    def reference(heads):
        return sum(resim_bruteforce_jnp(losses.l2_normalize(x), jnp.asarray(teacher)) for x in heads.values())

    expected = jax.grad(reference)(heads)
    assert_trees_close(ours, expected, rtol=1e-5)


def test_distillation_loss_normalises_raw_inputs():
    rng = np.random.default_rng(10)
    teacher, fc1 = normalized(rng, 6, 12), normalized(rng, 6, 12)
    scaled = distillation_loss({"fc1": 3.0 * fc1}, 0.5 * teacher, None)[0]
    np.testing.assert_allclose(float(scaled), float(distillation_loss({"fc1": fc1}, teacher, None)[0]), rtol=1e-5)


def test_self_distillation_targets_main_head_without_gradient_into_it():
    rng = np.random.default_rng(11)
    teacher = normalized(rng, 8, 16)
    heads = {"fc1": normalized(rng, 8, 16), "fc2": normalized(rng, 8, 4)}
    config = losses.LossConfig(reduction_target="main_head")
    _, terms = distillation_loss(heads, teacher, config)
    np.testing.assert_allclose(
        float(terms["fc2/similarity"]), float(losses.similarity_loss(heads["fc2"], heads["fc1"])), rtol=1e-6
    )

    def reduction_terms_only(heads):
        _, terms = losses.distillation_loss(heads, teacher, config)
        return terms["fc2/similarity"] + terms["fc2/relative_similarity"]

    grads = jax.jit(jax.grad(reduction_terms_only))(heads)
    assert float(jnp.abs(grads["fc1"]).max()) == 0.0
    assert float(jnp.abs(grads["fc2"]).max()) > 0.0


def test_distillation_loss_accepts_a_mapping_config():
    rng = np.random.default_rng(12)
    teacher, fc1 = normalized(rng, 5, 6), normalized(rng, 5, 6)
    config = losses.LossConfig.from_mapping({"cosine_weight": 0.0, "similarity_weight": 0.0})
    total, _ = distillation_loss({"fc1": fc1}, teacher, config)
    np.testing.assert_allclose(float(total), 20.0 * resim_reference_loops(fc1, teacher), rtol=2e-6)


@pytest.mark.parametrize(
    "heads, config, message",
    [
        ({"fc2": (5, 4)}, {}, r"'main_head' is 'fc1' but the student's heads are \['fc2'\]"),
        ({}, {}, "no student heads"),
        ({"fc1": (5, 7)}, {}, "same dim"),
        ({"fc1": (5, 6), "fc2": (4, 3)}, {}, "same texts"),
        ({"fc1": (5, 6)}, {"cosine_wieght": 1.0}, r"unknown loss config key\(s\) \['cosine_wieght'\]"),
        ({"fc1": (5, 6)}, {"margin": -0.1}, "'margin' must be a finite number >= 0"),
        ({"fc1": (5, 6)}, {"similarity_weight": float("nan")}, "'similarity_weight' must be a finite number"),
        ({"fc1": (5, 6)}, {"reduction_target": "self"}, "'reduction_target' must be 'teacher' or 'main_head'"),
    ],
)
def test_distillation_loss_bad_input(heads, config, message):
    heads = {name: jnp.ones(shape) for name, shape in heads.items()}
    with pytest.raises(ValueError, match=message):
        losses.distillation_loss(heads, jnp.ones((5, 6)), config)


def test_without_a_main_head_every_head_is_a_reduction_head_of_the_target():
    rng = np.random.default_rng(3)
    target = rng.normal(size=(10, 12)).astype(np.float32)
    heads = {"dense_6": rng.normal(size=(10, 6)).astype(np.float32),
             "dense_4": rng.normal(size=(10, 4)).astype(np.float32)}
    total, terms = losses.distillation_loss(heads, target, losses.LossConfig(main_head=None))
    assert set(terms) == {f"{name}/{term}" for name in heads for term in ("similarity", "relative_similarity")}
    for name, vectors in heads.items():
        np.testing.assert_allclose(terms[f"{name}/similarity"],
                                   losses.similarity_loss(losses.l2_normalize(vectors), losses.l2_normalize(target)),
                                   rtol=1e-6)
    with pytest.raises(ValueError, match="reduction target must be 'teacher'"):
        losses.distillation_loss(heads, target, losses.LossConfig(main_head=None, reduction_target="main_head"))
