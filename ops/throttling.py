"""Budgets of attempts per time window, kept in the cache (Redis in production, so that every
daphne process counts against the same budget).

    budget = Budget("login")              # its rate: REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"]
    wait = budget.refused("address", ip)  # seconds to wait, or None while budget is left
    budget.spend("address", ip)           # one attempt used
    wait = budget.take("user", 42)        # both at once: spend unless refused

A window per key opens at its first attempt and lasts the rate's period; its counter is made
with cache.add and cache.incr, which Redis does atomically, so two processes counting at once
cannot both slip past the limit (and, unlike windows aligned to the clock, no burst fits twice
the budget across a boundary). One
budget is shared by every protocol that spends it: REST chat, websocket generate frames and
the /v1 API all spend the user's "chat" budget through `UserBudgetThrottle` or `Budget`.

Used by: log-in (page and /api/auth/token/) and sign-up, per client address and per account
name (`credentials_refused`, `credentials_spend`); chat and LEARN feedback per user.
"""

from __future__ import annotations

import hashlib
import math
import time

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """"10/min" → (10, 60): DRF's notation, so one setting reads the same everywhere."""
    try:
        count, period = rate.split("/")
        return int(count), PERIODS[period.strip()[0]]
    except (ValueError, KeyError, IndexError):
        raise ImproperlyConfigured(f"{rate!r} is not a rate such as 10/min") from None


class Budget:
    def __init__(self, scope: str) -> None:
        self.scope = scope
        try:
            rate = api_settings.DEFAULT_THROTTLE_RATES[scope]
        except KeyError:
            raise ImproperlyConfigured(f"No throttle rate for {scope!r} in DEFAULT_THROTTLE_RATES") from None
        self.limit, self.period = parse_rate(rate)

    def _key(self, kind: str, value, *, open_window: bool) -> tuple[str, int]:
        """The counter's key and the seconds its window has left (opening one if asked)."""
        now = time.time()
        # Hashed: account names are user input (any length, any character) and cache keys are not.
        digest = hashlib.sha256(str(value).encode("utf-8", "surrogatepass")).hexdigest()[:32]
        key = f"budget:{self.scope}:{kind}:{digest}"
        if open_window:
            cache.add(f"{key}:until", now + self.period, timeout=self.period)
        until = cache.get(f"{key}:until") or now + self.period
        return key, max(1, math.ceil(until - now))

    def refused(self, kind: str, value) -> int | None:
        """Seconds until this key's window ends when its budget is spent, else None."""
        key, left = self._key(kind, value, open_window=False)
        return left if (cache.get(key) or 0) >= self.limit else None

    def _incr(self, key: str, left: int) -> int:
        # add() creates the counter only if missing, so incr() never races a reset; the
        # counter expires with its window.
        cache.add(key, 0, timeout=left)
        try:
            return cache.incr(key)
        except ValueError:  # expired between add() and incr()
            cache.add(key, 1, timeout=left)
            return 1

    def spend(self, kind: str, value) -> None:
        self._incr(*self._key(kind, value, open_window=True))

    def take(self, kind: str, value) -> int | None:
        """Spend one attempt unless the budget is spent; the seconds to wait if it is."""
        key, left = self._key(kind, value, open_window=True)
        return left if self._incr(key, left) > self.limit else None


# -- credentials: log-in, token, sign-up ------------------------------------------------------


def client_address(request) -> str:
    """The client's address as daphne reports it (behind a proxy, daphne --proxy-headers sets
    it from X-Forwarded-For; a header is never read here, so a client cannot pick its own)."""
    return request.META.get("REMOTE_ADDR") or "unknown"


def _account(username) -> str:
    # Case-folded: "Alice" and "alice" are one account name to a guesser.
    return str(username or "").strip().casefold()


def credentials_refused(*, scope: str, address: str, username) -> int | None:
    """Seconds to wait when the address or the account name has spent its budget of `scope`."""
    budget = Budget(scope)
    waits = [budget.refused("address", address)]
    if _account(username):
        waits.append(budget.refused("account", _account(username)))
    waits = [w for w in waits if w]
    return max(waits) if waits else None


def credentials_spend(*, scope: str, address: str, username) -> None:
    """Count one attempt (a failed log-in, a sign-up) against the address and the account name."""
    budget = Budget(scope)
    budget.spend("address", address)
    if _account(username):
        budget.spend("account", _account(username))


def too_many_message(wait: int, what: str = "attempts") -> str:
    return f"Too many {what}. Try again in {wait} seconds."


def user_budget_take(*, scope: str, user) -> int | None:
    """Spend one of the user's `scope` attempts; the seconds to wait when none is left."""
    return Budget(scope).take("user", user.pk)


class UserBudgetThrottle(BaseThrottle):
    """DRF throttle spending the caller's budget of the view's `throttle_scope`, the same
    counter the websocket spends (`Budget(scope).take("user", user.pk)`). DRF answers 429 with
    Retry-After when it refuses."""

    def allow_request(self, request, view) -> bool:
        scope = getattr(view, "throttle_scope", None)
        if not scope or not request.user or not request.user.is_authenticated:
            return True
        self._wait = user_budget_take(scope=scope, user=request.user)
        return self._wait is None

    def wait(self):
        return self._wait
