"""scripts/batch_neighbours.py on real records: teacher-neighbour batches hold closer pairs than random ones."""
import re

import kit


def load_script():
    return kit.load_script("batch_neighbours")


def test_neighbour_batches_are_closer_than_random(records_folder, capsys):
    script = load_script()
    assert script.main([f"--records={records_folder}", "--rows=1000", "--batch=4", "--windows=8"]) == 0
    medians = {name: float(value) for name, value in
               re.findall(r"^\| (random|teacher, window 8) \| ([0-9.]+) ", capsys.readouterr().out, re.M)}
    assert set(medians) == {"random", "teacher, window 8"} and medians["teacher, window 8"] > medians["random"]


def test_a_folder_that_is_not_records_is_one_line(tmp_path, capsys):
    assert load_script().main([f"--records={tmp_path}"]) == 2
    assert "is not an embed_jax records folder" in capsys.readouterr().err
