"""`--mteb_results=DIR`: the mteb: tasks' results in mteb's own format and layout, which mteb reads back (its
TaskResult and load_results), with the scores the report shows. Skipped without the mteb extra."""
import json

import pytest

from embed_jax.eval.__main__ import main

STS = "MockSTSTask"


def test_mteb_results_are_written_in_mtebs_format(tiny_st, tmp_path):
    mteb = pytest.importorskip("mteb")
    out, results_dir = tmp_path / "eval", tmp_path / "mteb_results"
    code = main([f"--model={tiny_st}", f"--out={out}", f"--tasks=mteb:{STS},lee_similarity",
                 f"--mteb_results={results_dir}", "--no_cache"])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    files = sorted(results_dir.glob(f"results/*/*/{STS}.json"))
    assert len(files) == len(rows) == 3  # one model folder per head: 16, 8, pooled
    for row in rows:
        (path,) = [path for path in files if path.parent.parent.name.endswith(f"-{row['head']}")]
        result = mteb.TaskResult.from_disk(path)
        assert result.task_name == STS
        assert result.get_score() == pytest.approx(row["metrics"][f"mteb:{STS}/cosine_spearman"])
        assert (path.parent / "model_meta.json").is_file()
    from mteb.cache import ResultCache

    assert len(list(ResultCache(str(results_dir)).load_results())) == 3  # mteb's own reader finds all three
