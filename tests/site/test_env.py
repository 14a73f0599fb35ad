from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from steerlab_site.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_matching,
    env_path,
    env_str,
)


def test_it_returns_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("STEERLAB_X", raising=False)
    assert env_str("STEERLAB_X", "fallback") == "fallback"
    assert env_bool("STEERLAB_X", True) is True
    assert env_int("STEERLAB_X", 7) == 7
    assert env_list("STEERLAB_X", ["a"]) == ["a"]


def test_it_treats_empty_as_unset(monkeypatch):
    monkeypatch.setenv("STEERLAB_X", "  ")
    assert env_str("STEERLAB_X", "fallback") == "fallback"
    assert env_int("STEERLAB_X", 3) == 3


def test_it_requires_a_variable_without_default(monkeypatch):
    monkeypatch.delenv("STEERLAB_X", raising=False)
    with pytest.raises(ImproperlyConfigured, match="STEERLAB_X is required"):
        env_str("STEERLAB_X")


@pytest.mark.parametrize("value", ["1", "true", "True", "YES", "on"])
def test_it_reads_true_words(monkeypatch, value):
    monkeypatch.setenv("DEBUG", value)
    assert env_bool("DEBUG", False) is True


@pytest.mark.parametrize("value", ["0", "false", "False", "no", "OFF"])
def test_it_reads_false_words(monkeypatch, value):
    monkeypatch.setenv("DEBUG", value)
    assert env_bool("DEBUG", True) is False


def test_it_rejects_a_bool_it_does_not_know(monkeypatch):
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match=r"DEBUG='maybe' is not valid: expected a bool"):
        env_bool("DEBUG", False)


def test_it_reads_int_and_checks_bounds(monkeypatch):
    monkeypatch.setenv("Q_WORKERS", "4")
    assert env_int("Q_WORKERS", 1, minimum=1) == 4

    monkeypatch.setenv("Q_WORKERS", "0")
    with pytest.raises(ImproperlyConfigured, match=r"Q_WORKERS='0'.*>= 1"):
        env_int("Q_WORKERS", 1, minimum=1)

    monkeypatch.setenv("Q_WORKERS", "two")
    with pytest.raises(ImproperlyConfigured, match=r"Q_WORKERS='two'.*an integer"):
        env_int("Q_WORKERS", 1)


def test_it_reads_float_and_rejects_nan(monkeypatch):
    monkeypatch.setenv("Q_POLL", "0.5")
    assert env_float("Q_POLL", 1.0) == 0.5

    monkeypatch.setenv("Q_POLL", "nan")
    with pytest.raises(ImproperlyConfigured, match=r"Q_POLL='nan'.*finite"):
        env_float("Q_POLL", 1.0)

    monkeypatch.setenv("Q_POLL", "fast")
    with pytest.raises(ImproperlyConfigured, match=r"Q_POLL='fast'"):
        env_float("Q_POLL", 1.0)


def test_it_splits_lists_on_commas(monkeypatch):
    monkeypatch.setenv("ALLOWED_HOSTS", " example.org, .example.com ,,")
    assert env_list("ALLOWED_HOSTS", []) == ["example.org", ".example.com"]


def test_it_checks_choices(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(ImproperlyConfigured, match=r"LOG_LEVEL='LOUD'.*one of INFO, DEBUG"):
        env_choice("LOG_LEVEL", "INFO", ["INFO", "DEBUG"])

    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    assert env_choice("LOG_LEVEL", "INFO", ["INFO", "DEBUG"]) == "DEBUG"


def test_it_matches_patterns_in_full(monkeypatch):
    pattern = r"cpu|cuda:\d+"
    monkeypatch.setenv("STEERLAB_DEVICE", "cuda:1")
    assert env_matching("STEERLAB_DEVICE", "cpu", pattern, "cpu or cuda:N") == "cuda:1"

    monkeypatch.setenv("STEERLAB_DEVICE", "cuda:1x")
    with pytest.raises(ImproperlyConfigured, match=r"STEERLAB_DEVICE='cuda:1x'.*cpu or cuda:N"):
        env_matching("STEERLAB_DEVICE", "cpu", pattern, "cpu or cuda:N")


def test_it_makes_paths_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDIA_ROOT", "media")
    assert env_path("MEDIA_ROOT", Path("/unused")) == tmp_path.resolve() / "media"
