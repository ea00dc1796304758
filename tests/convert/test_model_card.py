"""The exported folder can be published as it is: huggingface_hub parses its card and metadata offline (base_model,
license, language, datasets, model-index of the evaluation), teachers by Hub id, no absolute local path anywhere in
the folder, readable evaluation columns; --push_to_hub's refusals are one line, and its upload goes through
HfApi's interface (a local fake here: no network)."""
import json
import re
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard

from embed_jax.convert import hf_export, hub_push, model_card, st_export
from embed_jax.eval import report


def row(model, head, dim, metrics, source=None, precision="float32"):
    return {"model": model, "kind": "flax-student", "head": head, "dim": dim, "default_head": head == "1152",
            "precision": precision, "metrics": metrics, "mean": 0.5, "counts": {}, "skipped_tasks": {},
            "holdout": {"status": "clean"}, "source": source or {}}


@pytest.fixture(scope="module")
def published(minilm_workdir, tmp_path_factory):
    """The MiniLM student exported with an evaluation of itself (by its workdir path) and of a bundled teacher."""
    folder = tmp_path_factory.mktemp("card")
    metrics = {"lee_similarity/spearman": 0.51, "lee_retrieval/ndcg@10": 0.82, "wordnet_retrieval/mrr@10": 0.11}
    results = {"tasks": {name: {"description": name, "metrics": [key.split("/")[1]], "counts": {}}
                         for name, key in (("lee_similarity", "lee_similarity/spearman"),
                                           ("lee_retrieval", "lee_retrieval/ndcg@10"),
                                           ("wordnet_retrieval", "wordnet_retrieval/mrr@10"))},
               "headline": {"metrics": list(metrics)},
               "rows": [row(str(minilm_workdir), "1152", 1152, metrics,
                            source={"stage_dir": str(minilm_workdir / "stage3")}),
                        row(str(minilm_workdir), "256", 256, metrics),
                        row("asset:all-MiniLM-L6-v2", "default", 384, metrics),
                        row(f"asym:{minilm_workdir}", "1152", 1152, {"wordnet_retrieval/mrr@10": 0.12})]}
    eval_json, _ = report.write_report(results, folder / "eval")
    out = folder / "model"
    result = st_export.export(minilm_workdir, out, eval_json=str(eval_json))
    return out, result, minilm_workdir


def test_huggingface_hub_parses_the_card_and_its_metadata(published):
    out, _, _ = published
    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "sentence-transformers" and data["pipeline_tag"] == "sentence-similarity"
    assert data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert data["license"] == "apache-2.0" and data["language"] == ["en"]  # the start's own card says so
    assert data["datasets"] and all(name.startswith("embed_jax-builtin/") for name in data["datasets"])
    assert "sentence-transformers" in data["tags"]
    # model-index → EvalResult objects: huggingface_hub's own parser of the Hub's format
    results = card.data.eval_results
    assert {(result.metric_type, result.metric_value) for result in results} >= {
        ("spearman", 0.51), ("ndcg_at_10", 0.82), ("mrr_at_10", 0.11)}
    assert {result.task_type for result in results} == {"sentence-similarity", "retrieval"}
    assert all(result.metric_value != 0.12 for result in results)  # the asymmetric row is not this model alone
    ModelCard(card.content)  # round trip of the text


def test_no_absolute_local_path_anywhere_in_the_folder(published):
    out, _, workdir = published
    roots = {str(workdir.parent), str(out.parent), str(Path.home()), "/tmp/"}
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".json", ".txt"):
            text = path.read_text(encoding="utf-8")
            for root in roots:
                assert root not in text, (path.name, root)
    record = json.loads((out / hf_export.EXPORT_FILE).read_text())
    assert record["source"]["workdir"] == "../../" + str(Path(*workdir.parts[-2:]))
    assert not Path(record["training_records"][0]["records_dir"]).is_absolute()


def test_the_evaluation_table_reads_as_the_evaluations_own(published):
    out, _, _ = published
    text = (out / "README.md").read_text()
    table = [line for line in text[text.index("## Evaluation"):].splitlines() if line.startswith("|")]
    assert table[0] == "| model | head | dim | Lee Spearman | Lee nDCG@10 | WN MRR@10 | mean |"
    cells = [line.split(" | ")[0].strip("| ") for line in table[2:]]
    assert cells == ["this model", "this model", "sentence-transformers/all-MiniLM-L6-v2",
                     "asym:this-is-not-shown"][:3] + [cells[3]]
    assert cells[3].startswith("asym:") and "/" not in cells[3].removeprefix("asym:")


def test_teachers_are_named_by_their_hub_ids_and_the_heads_by_their_kind(published):
    out, result, _ = published
    text = (out / "README.md").read_text()
    teachers = text[text.index("## Teachers"):text.index("## Training stages")]
    assert "sentence-transformers/all-MiniLM-L6-v2" in teachers and "asset:" not in teachers
    assert "**Kind of heads: separate projections**" in text and "Do not use `truncate_dim`" in text
    assert any("truncate_dim" in warning for warning in result.warnings)
    assert "from sentence_transformers.sentence_transformer.modules import Dense" in text
    assert "This card describes the folder as exported" in text


def test_a_matryoshka_run_says_so_and_sets_truncate_dim(minilm_workdir, tmp_path):
    """A run trained with loss.matryoshka_dims: the card names its prefixes, --default_head may be one of them
    (config_sentence_transformers.json's truncate_dim), and no truncate_dim warning is given."""
    import shutil

    workdir = tmp_path / "runs" / "train"
    shutil.copytree(minilm_workdir, workdir)
    (workdir / "config.json").write_text(json.dumps({"loss": {"matryoshka_dims": [64, 96]},
                                                     "data": {"records_dir": str(minilm_workdir.parent / "records")}}))
    result = st_export.export(workdir, tmp_path / "out", default_head=96,
                              records_dirs=[str(minilm_workdir.parent / "records")])
    settings = json.loads((tmp_path / "out" / "config_sentence_transformers.json").read_text())
    assert settings["truncate_dim"] == 96 and result.default_head == 1152 and not result.warnings
    text = (tmp_path / "out" / "README.md").read_text()
    assert "**Kind of heads: Matryoshka.**" in text and "matryoshka" in ModelCard(text).data.tags
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(["a dog"]).shape == (1, 96)


# ---------------------------------------------------------------------------------------------------- push


@pytest.fixture
def online(monkeypatch):
    """The test session runs with HF_HUB_OFFLINE=1 (tests/conftest.py); a push test lifts it, reaching no network."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


class LocalHub:
    """HfApi's two calls a push makes, kept in memory: the repository and the files it would hold."""

    def __init__(self):
        self.repos, self.files = [], {}

    def create_repo(self, repo_id, repo_type, private, exist_ok):
        self.repos.append((repo_id, repo_type, private, exist_ok))

    def upload_folder(self, folder_path, repo_id, repo_type, commit_message):
        folder = Path(folder_path)
        self.files[repo_id] = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
        return type("Commit", (), {"commit_url": f"local://{repo_id}/commit/1"})()


def test_push_uploads_the_whole_folder(published, monkeypatch, online):
    out, _, _ = published
    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    hub = LocalHub()
    assert hub_push.push(out, "my-org/minilm-student", api=hub) == "local://my-org/minilm-student/commit/1"
    assert hub.repos == [("my-org/minilm-student", "model", False, True)]
    assert hub.files["my-org/minilm-student"] == sorted(json.loads((out / hf_export.EXPORT_FILE).read_text())["files"])


def test_push_without_a_token_is_one_line(monkeypatch, tmp_path, online):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored token either
    monkeypatch.setattr(hub_push, "token", lambda: None)
    with pytest.raises(hub_push.PushError, match=r"^--push_to_hub=org/name: no Hugging Face token; run") as error:
        hub_push.check_push("org/name")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("repo_id", ["just-a-name", "org/name/extra", "/abs/path"])
def test_push_to_a_malformed_repository_id_is_refused(repo_id):
    with pytest.raises(hub_push.PushError, match="ORG/NAME"):
        hub_push.check_push(repo_id)


def test_push_with_the_hub_switched_off_is_one_line(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub_push.PushError, match="HF_HUB_OFFLINE=1"):
        hub_push.check_push("org/name")


def test_push_with_no_network_is_one_line(published, monkeypatch, online):
    """A real HfApi against a local port nothing listens on: the connection fails as it does offline."""
    out, _, _ = published
    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    api = HfApi(endpoint="http://127.0.0.1:9", token="hf_local_test_token")
    with pytest.raises(hub_push.PushError, match=r"could not reach http://127\.0\.0\.1:9 .*hf upload") as error:
        hub_push.push(out, "org/name", api=api)
    assert "\n" not in str(error.value)


def test_command_refuses_a_push_without_a_token_before_any_work(tmp_path, monkeypatch, capsys, online):
    from embed_jax.convert import hf

    monkeypatch.setattr(hub_push, "token", lambda: None)
    code = hf.main([f"--workdir={tmp_path / 'nothing'}", f"--out={tmp_path / 'out'}", "--push_to_hub=org/name"])
    err = capsys.readouterr().err
    assert code == hf.EXIT_CODE and err.count("\n") == 1 and "no Hugging Face token" in err
    assert not (tmp_path / "out").exists()
