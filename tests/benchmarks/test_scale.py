"""benchmarks/scale.py: a disk too small for its largest size is one line before anything is written; the table
extrapolates each cost along the line through the measured sizes."""
import importlib.util
import shutil
from pathlib import Path

SCALE = Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py"
spec = importlib.util.spec_from_file_location("scale", SCALE)
scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale)


def test_a_disk_too_small_for_the_largest_size_stops_in_one_line(tmp_path, capsys):
    free = shutil.disk_usage(tmp_path).free
    too_many = free // scale.record_bytes(12288) + 1
    out = tmp_path / "scale"
    assert scale.main(["--out", str(out), "--sizes", "1000", str(too_many)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"benchmarks/scale.py: the largest size, {too_many:,} records × 12288-d float16, needs ~")
    assert f"GB in {out};" in line and "Pass smaller --sizes" in line
    assert list(out.iterdir()) == []  # nothing written


def test_the_table_extrapolates_along_the_line_and_averages_rates():
    results = [{"records": size, "check_records_cheaply_s": 1.0 + size / 1000, "steady_records_per_s": rate}
               for size, rate in ((1000, 90.0), (2000, 110.0))]
    lines = scale.table(results, 10_000).splitlines()
    assert "| check_records_cheaply_s | 2.00 | 3.00 | 11.00 |" in lines
    assert "| steady_records_per_s | 90 | 110 | 100 |" in lines
