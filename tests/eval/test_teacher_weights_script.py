"""scripts/teacher_weights.py: the weighted target scored on a validation task for each w (a table, JSON and a
plot under --out), and its refusal of the evaluation suite's hold-out tasks."""
import json

import kit
import pytest


def script():
    return kit.load_script("teacher_weights")


@pytest.mark.parametrize("arguments,message", [
    (["--task=wordnet_retrieval"], "--task=wordnet_retrieval is a task of the evaluation suite (its hold-out)"),
    (["--weights=0,1.5"], "--weights=0,1.5: each w must be in [0, 1]"),
    (["--teachers=asset:all-MiniLM-L6-v2"], "--teachers names 1 specs; give two"),
])
def test_refusals_come_before_any_encoding(tmp_path, capsys, arguments, message):
    assert script().main([f"--out={tmp_path}", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_table_json_and_plot_of_each_weight(tmp_path, tiny_st, capsys):
    """Two tiny teachers on wordnet_validation: one row per w; w = 0 and w = 1 are the teachers alone."""
    from embed_jax.eval import encoding, runner

    code = script().main([f"--out={tmp_path}", f"--teachers={tiny_st},{tiny_st / '..' / tiny_st.name}",
                          "--weights=0,0.5,1"])
    assert code == 0
    report = json.loads((tmp_path / "teacher_weights.json").read_text())
    assert [row["weight"] for row in report["rows"]] == [0.0, 0.5, 1.0]
    assert report["counts"]["queries"] == 4368 and (tmp_path / "teacher_weights.png").stat().st_size > 0
    assert "| 0.5 |" in (tmp_path / "teacher_weights.md").read_text() and "| 0.5 |" in capsys.readouterr().out
    alone = runner.evaluate([str(tiny_st)], ["wordnet_validation"],
                            encoding.EncodeContext(cache_dir=tmp_path / "cache"))
    for row in report["rows"]:  # the two teachers are one model: every weight gives its own scores
        assert row["mrr@10"] == pytest.approx(alone["rows"][0]["metrics"]["wordnet_validation/mrr@10"], abs=1e-6)
