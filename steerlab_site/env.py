"""Strict readers for settings that come from environment variables.

Each helper takes the variable's name and a default, and returns the parsed value. A value that
does not parse raises ImproperlyConfigured naming the variable and the value: a typo such as
DEBUG=maybe stops the process at start-up instead of quietly meaning something else.

An unset variable and an empty one both mean "use the default", because docker compose and
shell scripts pass `VAR=` when they mean "not set". A helper called without a default makes the
variable required.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _raw(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _default(name: str, default: T | _Required) -> T:
    if isinstance(default, _Required):
        raise ImproperlyConfigured(f"The environment variable {name} is required but not set.")
    return default


def _bad(name: str, value: str, expected: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{name}={value!r} is not valid: expected {expected}.")


def env_str(name: str, default: str | _Required = REQUIRED) -> str:
    value = _raw(name)
    return _default(name, default) if value is None else value


def env_bool(name: str, default: bool | _Required = REQUIRED) -> bool:
    value = _raw(name)
    if value is None:
        return _default(name, default)
    word = value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    choices = ", ".join(sorted(TRUE_WORDS | FALSE_WORDS))
    raise _bad(name, value, f"a boolean, one of {choices}")


def _check_bounds(name: str, value: str, number, minimum, maximum):
    if minimum is not None and number < minimum:
        raise _bad(name, value, f"a number >= {minimum}")
    if maximum is not None and number > maximum:
        raise _bad(name, value, f"a number <= {maximum}")
    return number


def env_int(
    name: str,
    default: int | _Required = REQUIRED,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = _raw(name)
    if value is None:
        return _default(name, default)
    try:
        number = int(value)
    except ValueError:
        raise _bad(name, value, "an integer") from None
    return _check_bounds(name, value, number, minimum, maximum)


def env_float(
    name: str,
    default: float | _Required = REQUIRED,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float:
    value = _raw(name)
    if value is None:
        return _default(name, default)
    try:
        number = float(value)
    except ValueError:
        raise _bad(name, value, "a number") from None
    # float() accepts "nan" and "inf", which no setting here can mean.
    if number != number or number in (float("inf"), float("-inf")):
        raise _bad(name, value, "a finite number")
    return _check_bounds(name, value, number, minimum, maximum)


def env_list(name: str, default: Sequence[str] | _Required = REQUIRED) -> list[str]:
    """A comma-separated list; blanks around items and empty items are dropped."""
    value = _raw(name)
    if value is None:
        return list(_default(name, default))
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(name: str, default: Sequence[str] | _Required = REQUIRED) -> list[str]:
    """A comma-separated list of IP addresses or networks (CIDR), each written canonically
    ("10.0.0.7/32", "172.30.80.0/24"); a typo stops start-up instead of trusting nothing."""
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise _bad(name, item, "IP addresses or networks such as 10.0.0.7 or 172.30.80.0/24, comma-separated") from None
    return networks


def env_choice(name: str, default: str | _Required, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    value = env_str(name, default)
    if value not in choices:
        raise _bad(name, value, "one of " + ", ".join(choices))
    return value


def env_matching(name: str, default: str | _Required, pattern: str, expected: str) -> str:
    """A string that must match `pattern` in full; `expected` describes it in the error."""
    value = env_str(name, default)
    if re.fullmatch(pattern, value) is None:
        raise _bad(name, value, expected)
    return value


def env_path(name: str, default: Path | str | _Required = REQUIRED) -> Path:
    """A filesystem path, made absolute so that it does not depend on the working directory."""
    value = _raw(name)
    path = Path(_default(name, default)) if value is None else Path(value).expanduser()
    return path.resolve()
