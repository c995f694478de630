"""DataHealth: counts, per-reason example paths, checkpoints (old and new), merging processes, the epoch report."""

import pytest

from umt_cli.data.failures import DataHealth, Failure
from umt_cli.errors import DataError


def _failures(*pairs: tuple[str, str]) -> list[Failure]:
    return [Failure(i, reason, path) for i, (reason, path) in enumerate(pairs)]


def test_examples_are_kept_per_reason_without_repeats_up_to_the_cap():
    health = DataHealth(max_examples=2)
    health.update(3, _failures(("open_fail", "a.mp4"), ("open_fail", "a.mp4"), ("missing", "m.mp4")))
    health.update(4, _failures(("open_fail", "b.mp4"), ("open_fail", "c.mp4")))
    assert health.examples == {"open_fail": ["a.mp4", "b.mp4"], "missing": ["m.mp4"]}
    assert health.by_reason == {"open_fail": 4, "missing": 1} and health.delivered == 7
    assert health.report() == [
        "skipped 5 of 12 clips (41.7%):",
        "  open_fail 4: a.mp4, b.mp4, ...",  # at the cap: other files may have failed too
        "  missing 1: m.mp4",
    ]
    assert health.line() == "7 clips loaded, 5 skipped (missing 1, open_fail 4)"
    assert health.summary()["failed/open_fail"] == 4
    health.max_fail_ratio = 0.1
    with pytest.raises(DataError, match="first: open_fail: a.mp4"):
        health.check(final=True)


def test_a_clean_epoch_reports_nothing():
    health = DataHealth()
    health.update(8, [])
    assert health.report() == [] and health.line() == "8 clips loaded, 0 skipped (none)"


def test_state_dict_round_trip_and_an_old_flat_examples_list():
    health = DataHealth()
    health.update(5, _failures(("decode_fail", "x: y.mp4"), ("timeout", "t.mp4")))
    restored = DataHealth()
    restored.load_state_dict(health.state_dict())
    assert restored.state_dict() == health.state_dict()
    assert restored.examples == {"decode_fail": ["x: y.mp4"], "timeout": ["t.mp4"]}

    old = {"delivered": 9, "by_reason": {"missing": 2}, "examples": ["missing: a.mp4", "missing: b: c.mp4"]}
    restored.load_state_dict(old)  # a checkpoint written before examples were kept per reason
    assert restored.delivered == 9 and restored.examples == {"missing": ["a.mp4", "b: c.mp4"]}


def test_merged_adds_every_process_counters_and_examples():
    rank0, rank1 = DataHealth(), DataHealth()
    rank0.update(10, _failures(("open_fail", "a.mp4"), ("missing", "m.mp4")))
    rank1.update(6, _failures(("open_fail", "a.mp4"), ("open_fail", "b.mp4")))
    total = DataHealth.merged([rank0.state_dict(), rank1.state_dict()], max_fail_ratio=0.5)
    assert total.delivered == 16 and total.by_reason == {"open_fail": 3, "missing": 1}
    assert total.examples == {"open_fail": ["a.mp4", "b.mp4"], "missing": ["m.mp4"]}
    assert total.max_fail_ratio == 0.5
    assert total.report()[1:] == ["  open_fail 3: a.mp4, b.mp4", "  missing 1: m.mp4"]
    assert rank0.by_reason == {"open_fail": 1, "missing": 1}  # the inputs are left alone
