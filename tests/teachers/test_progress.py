"""Progress lines: counts, rate over this run's work only, ETA."""
import io

from embed_jax.teachers.progress import Progress, format_duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_rate_and_eta_count_only_this_runs_work():
    clock, stream = Clock(), io.StringIO()
    progress = Progress(1000, every_s=5, stream=stream, clock=clock)
    clock.now = 30.0  # checking the finished shards takes time too, which must not lower the rate
    progress.skip(400)  # resumed: done before, not part of the rate
    clock.now = 40.0
    progress.advance(100)
    assert progress.rate() == 10.0
    assert stream.getvalue() == "[export] 500/1,000 texts (50.0%) · 10.0 texts/s · ETA 0m50s\n"
    clock.now = 42.0
    progress.advance(20)  # within every_s of the last line: quiet
    assert stream.getvalue().count("\n") == 1
    progress.finish()
    assert stream.getvalue().count("\n") == 2
    progress.finish()  # nothing new to say
    assert stream.getvalue().count("\n") == 2


def test_unknown_total_and_durations():
    stream = io.StringIO()
    progress = Progress(None, every_s=0, stream=stream, clock=Clock())
    progress.advance(3)
    assert "3 texts" in stream.getvalue() and "ETA" not in stream.getvalue()
    assert format_duration(3725) == "1h02m05s"
    assert format_duration(59.6) == "1m00s"
