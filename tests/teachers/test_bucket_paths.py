"""Records folders given as gs:// URLs: refused before any Path() could turn `gs://b/x` into the local `gs:/b/x`,
with the gcsfuse mount to use instead (docs/launch.md, "Records in a bucket")."""
import pytest

from embed_jax.data import pipeline, records
from embed_jax.data.records import RecordsError
from embed_jax.teachers import export


@pytest.mark.parametrize("key", ["output_dir", "reuse_from"])
def test_export_refuses_bucket_folders(make_config, corpus_file, tmp_path, key):
    config = make_config(tmp_path / "out", corpus_file)
    config[key] = "gs://my-bucket/records/v1"
    with pytest.raises(RecordsError, match=rf"{key}='gs://my-bucket/records/v1': records are local files .* "
                                           rf"--gcsfuse-bucket=my-bucket.* pass {key}=/mnt/gcs/my-bucket/records/v1"):
        export.run_export(config)
    assert not (tmp_path / "out").exists() and not (tmp_path / "gs:").exists()


@pytest.mark.parametrize("key", ["data.records_dir", "data.eval_records_dir"])
def test_training_side_refuses_bucket_folders(key):
    with pytest.raises(RecordsError, match=rf"{key}='gs://b/eval': .* pass {key}=/mnt/gcs/b/eval"):
        pipeline.RecordDataSource("gs://b/eval", records_key=key)


def test_other_urls_are_refused_too():
    with pytest.raises(RecordsError, match=r"data.records_dir='s3://b/r': records are local files"):
        records.check_local_records_path("s3://b/r", "data.records_dir")
    records.check_local_records_path("/mnt/gcs/b/r", "data.records_dir")  # a mount is a local folder
