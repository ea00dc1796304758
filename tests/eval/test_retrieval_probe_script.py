"""scripts/retrieval_probe.py: the student's fit to its target against the two references (matched isotropic noise,
the in-sample least-squares linear map), on a tiny trained student; its pieces against brute force; its refusals."""
import json

import kit
import numpy as np
import pytest


def script():
    return kit.load_script("retrieval_probe")


def unit_rows(count, dim, seed):
    rows = np.random.default_rng(seed).standard_normal((count, dim))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("fit", [0.6, 0.78, 0.95])
def test_matched_noise_has_the_asked_fit(fit):
    probe = script()
    target = unit_rows(2000, 1152, 0)
    assert probe.median_fit(probe.with_matched_noise(target, fit, seed=1), target) == pytest.approx(fit, abs=0.01)


@pytest.mark.parametrize("fit", [0.0, 1.0, 1.2])
def test_noise_refuses_a_fit_it_cannot_match(fit):
    with pytest.raises(ValueError, match="needs 0 < fit < 1"):
        script().noise_scale(fit, 16)


def test_least_squares_map_recovers_an_exact_affine_map():
    probe = script()
    source = unit_rows(300, 8, 2)
    # An isometric embedding 8 → 24 keeps the rows unit vectors, so the map fitted to unit targets is exact.
    isometry, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((24, 8)))
    target = source @ isometry.T
    assert probe.median_fit(probe.least_squares_map(source, target), target) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.slow
def test_retrieval_metrics_equal_brute_force():
    """Random vectors of the hold-out task's texts: the probe's scores against ranks counted one query at a time."""
    from embed_jax.eval import tasks, wordnet

    probe = script()
    task = tasks.load_task("wordnet_retrieval")
    texts = list(dict.fromkeys(task.texts()))
    index = {text: row for row, text in enumerate(texts)}
    vectors = unit_rows(len(texts), 6, 4)
    retrieval = wordnet.definition_retrieval_set()
    queries = vectors[[index[text] for text in retrieval.queries]]
    corpus = vectors[[index[text] for text in retrieval.corpus]]
    reciprocal, first = [], []
    for query, answer in zip(queries, retrieval.relevant):
        scores = corpus @ query
        # rank = 1 + documents scored higher, ties to the earlier document (embed_jax/eval/wordnet.py)
        rank = 1 + int(np.sum(scores > scores[answer]) + np.sum(scores[:answer] == scores[answer]))
        reciprocal.append(1 / rank if rank <= 10 else 0.0)
        first.append(rank == 1)
    found = probe.retrieval_metrics(task, vectors, index)
    assert found["mrr@10"] == pytest.approx(np.mean(reciprocal), abs=1e-6)
    assert found["recall@1"] == pytest.approx(np.mean(first), abs=1e-6)


def test_heads_of_another_dim_than_the_target_are_refused():
    with pytest.raises(ValueError, match="default head is 384-d but its target T is 1152-d"):
        script().comparable_heads("W", 384, "T", 1152)


def test_refusals_come_before_any_encoding(tmp_path, capsys):
    probe = script()
    assert probe.main([f"--out={tmp_path}"]) == 2
    assert "--student" in capsys.readouterr().err
    assert probe.main([f"--out={tmp_path}", f"--student={tmp_path / 'no_such_run'}"]) == 2
    assert "no_such_run" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_rows_of_a_tiny_student(tmp_path, st_teacher_workdir, tiny_st, capsys):
    """The fixture's target is its one teacher, tiny_st, which is also the start: the target row fits 1.0, the
    start's least-squares map onto its own vectors fits 1.0 and retrieves exactly as it does, and the noise row is
    matched to the student's FC1."""
    code = script().main([f"--out={tmp_path}", f"--student={st_teacher_workdir}", f"--start={tiny_st}"])
    assert code == 0
    report = json.loads((tmp_path / "retrieval_probe.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert report["target"] == str(tiny_st)
    target, start = rows[f"{tiny_st} (the target)"], rows[str(tiny_st)]
    assert target["fit"] == pytest.approx(1.0) and start["fit"] == pytest.approx(1.0)
    own_map = rows[f"least-squares linear map of {tiny_st} onto the target (in-sample)"]
    assert own_map["fit"] == pytest.approx(1.0, abs=1e-6) and own_map["mrr@10"] == pytest.approx(start["mrr@10"])
    fc1 = rows[f"{st_teacher_workdir} · 16"]
    noise = rows[f"target + isotropic noise at {st_teacher_workdir} · 16's fit"]
    assert 0 < fc1["fit"] < 1 and noise["fit"] == pytest.approx(fc1["fit"], abs=0.05)
    assert f"{st_teacher_workdir} · pooled" in rows
    assert "| vectors | fit" in capsys.readouterr().out and (tmp_path / "retrieval_probe.md").exists()
