"""Stage 4's loss (`losses.image_caption_loss`) against a word-by-word float64 reference of docs/method.md §3–4."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from embed_jax import losses

MARGIN = 0.015
image_caption_loss = jax.jit(losses.image_caption_loss, static_argnums=2)


def unit_rows(rng, m, d):
    x = rng.normal(size=(m, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def reference_head(image, caption, margin=MARGIN):
    """docs/method.md §3 for one head, float64 loops: (cosine, similarity, relative similarity)."""
    s, t = np.asarray(image, np.float64), np.asarray(caption, np.float64)
    cosine = np.mean([1.0 - s[i] @ t[i] for i in range(len(s))])
    similarity = np.mean([(s[i] @ s[j] - t[i] @ t[j]) ** 2 for i in range(len(s)) for j in range(len(s))])
    pairs = [(i, j) for i in range(len(s)) for j in range(i + 1, len(s))]
    p = [s[i] @ s[j] for i, j in pairs]
    q = [t[i] @ t[j] for i, j in pairs]
    hinges = [max(0.0, (1.0 if q[a] > q[b] else -1.0) * (p[b] - p[a]) + margin)
              for a, b in itertools.combinations(range(len(pairs)), 2)]
    return cosine, similarity, np.mean(hinges)


def reference_total(images, captions, weights=(10.0, 200.0, 20.0)):
    per_head = [np.dot(weights, reference_head(images[name], captions[name])) for name in images]
    return float(np.mean(per_head))


def test_every_head_gets_all_three_terms_and_the_total_averages_heads():
    rng = np.random.default_rng(0)
    images = {"dense_12": unit_rows(rng, 9, 12), "dense_5": unit_rows(rng, 9, 5)}
    # Captions with exact duplicates (the same caption for two images), the case digit captions are full of.
    captions = {"dense_12": unit_rows(rng, 9, 12), "dense_5": unit_rows(rng, 9, 5)}
    for name in captions:
        captions[name][4] = captions[name][1]
    total, terms = image_caption_loss(images, captions, losses.LossConfig())
    for name in images:
        expected = reference_head(images[name], captions[name])
        got = [terms[f"{name}/{term}"] for term in losses.LOSS_TERMS]
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(total, reference_total(images, captions), rtol=2e-5)


def test_gradient_reaches_images_only_and_matches_finite_differences():
    rng = np.random.default_rng(1)
    images = {"dense_6": unit_rows(rng, 6, 6)}
    captions = {"dense_6": unit_rows(rng, 6, 6)}

    def loss(image, caption):
        return losses.image_caption_loss({"dense_6": image}, {"dense_6": caption})[0]

    image_grad, caption_grad = jax.grad(loss, argnums=(0, 1))(jnp.asarray(images["dense_6"], jnp.float32),
                                                              jnp.asarray(captions["dense_6"], jnp.float32))
    assert float(jnp.abs(caption_grad).max()) == 0.0  # the captions are the (frozen) teacher
    direction = rng.normal(size=images["dense_6"].shape)
    step = 1e-4

    def reference(x):
        return reference_total({"dense_6": x / np.linalg.norm(x, axis=1, keepdims=True)}, captions)

    base = images["dense_6"].astype(np.float64)
    numeric = (reference(base + step * direction) - reference(base - step * direction)) / (2 * step)
    np.testing.assert_allclose(float(np.sum(np.asarray(image_grad) * direction)), numeric, rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("images, captions, message", [
    ({}, {}, "no image heads"),
    ({"dense_4": np.eye(4, dtype=np.float32)}, {"dense_8": np.eye(4, 8, dtype=np.float32)}, "differ"),
    ({"dense_4": np.eye(4, dtype=np.float32)}, {"dense_4": np.eye(3, 4, dtype=np.float32)}, "4 rows but teacher has 3"),
])
def test_bad_input_is_named(images, captions, message):
    with pytest.raises(ValueError, match=message):
        losses.image_caption_loss(images, captions)
