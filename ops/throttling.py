"""Budgets of attempts per time window, kept in the cache (Redis in production, so that every
daphne process counts against the same budget).

    budget = Budget("login")              # its rate: REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"]
    wait = budget.take("user", 42)        # spend one: seconds to wait if none was left, else None
    budget.give_back("user", 42)          # that one did not count after all

A window per key opens at its first attempt and lasts the rate's period; its counter is made
with cache.add and cache.incr, which Redis does atomically, so two processes counting at once
cannot both slip past the limit (and, unlike windows aligned to the clock, no burst fits twice
the budget across a boundary). One
budget is shared by every protocol that spends it: REST chat, websocket generate frames and
the /v1 API all spend the user's "chat" budget through `UserBudgetThrottle` or `Budget`.

Used by: log-in (pages and /api/auth/token/: `LoginAttempt`) and sign-up (`signup_take`),
per client address and account name; chat and LEARN feedback per user.
"""

from __future__ import annotations

import hashlib
import math
import time
import unicodedata

from django.conf import settings
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

    def _incr(self, key: str, left: int) -> int:
        # add() creates the counter only if missing, so incr() never races a reset; the
        # counter expires with its window.
        cache.add(key, 0, timeout=left)
        try:
            return cache.incr(key)
        except ValueError:  # expired between add() and incr()
            cache.add(key, 1, timeout=left)
            return 1

    def take(self, kind: str, value) -> int | None:
        """Spend one attempt unless the budget is spent; the seconds to wait if it is. The
        counter is incremented first and the answer read from its new value, so of many
        concurrent takes at most `limit` get None."""
        key, left = self._key(kind, value, open_window=True)
        return left if self._incr(key, left) > self.limit else None

    def give_back(self, kind: str, value) -> None:
        """Undo one take that turned out not to count (a refusal elsewhere, a success)."""
        key, _ = self._key(kind, value, open_window=False)
        try:
            if cache.decr(key) < 0:  # the window ended and a new one began in between
                cache.incr(key)
        except ValueError:  # the window has ended: nothing to give back
            pass


# -- credentials: log-in, token, sign-up ------------------------------------------------------
#
# Log-in (the pages and /api/auth/token/) spends three budgets, each counted before the password
# is checked (increment first, then decide, so concurrent guesses cannot all slip in):
#   "login"          per (account name, address): one address guessing one account;
#   "login_address"  per address, whatever the account: one address guessing many accounts;
#   "login_account"  per account name from all addresses, larger and slower: many addresses
#                    guessing one account. It is not spent, and does not refuse, at an address
#                    the account logged in from in the last STEERLAB_LOGIN_KNOWN_DAYS days, so an
#                    attack on the account from elsewhere cannot lock its owner out.
# A refused attempt gives back what it took before the budget that refused it, and a successful
# log-in gives back all it took: only failures spend.


def client_address(request) -> str:
    """The client's address: daphne's peer, or behind a trusted proxy the client it forwarded
    for (ops/forwarded.py rewrites the connection's address before Django sees it; a header is
    never read here, so a client cannot pick its own)."""
    return request.META.get("REMOTE_ADDR") or "unknown"


def account_name(username) -> str:
    """The account a name reaches: as authentication reads it (Django's log-in form strips it
    and NFKC-normalises it, `AbstractBaseUser.normalize_username`), case-folded (to a guesser
    "Alice" and "alice" are one target), so "ａlice" in fullwidth letters counts against "alice"."""
    name = unicodedata.normalize("NFKC", str(username or "").strip())
    return unicodedata.normalize("NFKC", name.casefold())


class LoginAttempt:
    """One log-in attempt, counted before its password is checked.

        attempt = LoginAttempt(address=client_address(request), username=name)
        if attempt.wait: ...answer 429, Retry-After: attempt.wait
        ...check the password; on success: attempt.succeeded()
    """

    def __init__(self, *, address: str, username) -> None:
        self.address, self.account = address, account_name(username)
        keys = [(Budget("login_address"), "address", address)]
        if self.account:
            keys.append((Budget("login"), "account-address", f"{self.account}\x00{address}"))
            if not self._known():
                keys.append((Budget("login_account"), "account", self.account))
        self.taken: list[tuple[Budget, str, str]] = []
        self.wait: int | None = None
        for budget, kind, value in keys:
            wait = budget.take(kind, value)
            if wait:
                self._give_back()
                self.wait = wait
                return
            self.taken.append((budget, kind, value))

    def _known_key(self) -> str:
        digest = hashlib.sha256(f"{self.account}\x00{self.address}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"known-login:{digest}"

    def _known(self) -> bool:
        return bool(cache.get(self._known_key()))

    def _give_back(self) -> None:
        for budget, kind, value in self.taken:
            budget.give_back(kind, value)
        self.taken = []

    def succeeded(self) -> None:
        """The password was right: nothing is spent, and this address is the owner's."""
        self._give_back()
        if self.account:
            cache.set(self._known_key(), 1, timeout=settings.STEERLAB_LOGIN_KNOWN_DAYS * 86400)


def signup_take(*, address: str, username) -> int | None:
    """Count one sign-up attempt (every attempt: each success is an account) against the
    address and the account name; the seconds to wait when either has none left."""
    budget = Budget("signup")
    wait = budget.take("address", address)
    if wait or not account_name(username):
        return wait
    wait = budget.take("account", account_name(username))
    if wait:
        budget.give_back("address", address)
    return wait


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
