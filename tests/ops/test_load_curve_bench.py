"""bench/chat_load.py's verdicts: what counts as an error, a clean refusal or a falling curve.
The load curve is only as honest as these rules; the benchmark itself is not a timed test."""

from bench.chat_load import checks, outcome, strengths


def row(clients, tokens_per_s, errors=None, refusals=None):
    errors = errors or {}
    return {"engine": "builtin", "clients": clients, "tokens_per_s": tokens_per_s, "errors": sum(errors.values()),
            "errors_by_kind": errors, "refusals": refusals or {}}


def verdict(rows, name):
    return next(v for v in checks(rows, {"builtin": 16}) if v["check"].startswith(name))


def test_an_answer_and_clean_refusals_are_not_errors():
    assert outcome({"type": "done", "stats": {"tokens": 3}}) == ("ok", "done")
    assert outcome({"type": "error", "code": "busy", "retry_after": 4}) == ("refused", "busy")
    assert outcome({"type": "error", "code": "too_many", "retry_after": 1}) == ("refused", "too_many")


def test_a_refusal_without_a_usable_retry_after_is_an_error():
    for retry_after in (None, 0, True, 1.5, "3"):
        frame = {"type": "error", "code": "busy", "retry_after": retry_after}
        assert outcome(frame) == ("error", "busy without retry_after"), retry_after
    assert outcome({"type": "error", "code": "too_many"}) == ("error", "too_many without retry_after")


def test_other_error_frames_and_failures_are_errors():
    assert outcome({"type": "error", "code": "internal", "retry_after": None}) == ("error", "error frame internal")
    assert outcome(None, "ConnectionClosedError: no close frame") == ("error", "ConnectionClosedError: no close frame")


def test_every_client_of_a_level_gets_its_own_steering():
    for clients in (1, 2, 7, 8, 64):
        values = strengths(clients)
        assert len(set(values)) == clients and 0 not in values and all(-1 <= v <= 1 for v in values)


def test_the_checks_flag_errors_unclean_refusals_and_a_falling_curve():
    good = [row(1, 20.0), row(8, 100.0, refusals={"busy": 2}), row(16, 97.0)]
    assert verdict(good, "no errors")["met"] and verdict(good, "refusals only")["met"]
    assert verdict(good, "throughput")["met"]  # 97 is within 5 % of 100
    bad = [row(1, 20.0), row(8, 100.0, errors={"busy without retry_after": 1}), row(16, 80.0)]
    assert not verdict(bad, "no errors")["met"] and not verdict(bad, "refusals only")["met"]
    falling = verdict(bad, "throughput")
    assert not falling["met"] and falling["ratio_to_best_before"] == {8: 5.0, 16: 0.8}
