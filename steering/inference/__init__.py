"""The inference service: no Django. `Scheduler` owns one model and batches the requests of
all users on one background thread; each caller follows its request through a `Ticket`.
`Admission` and `Ticket` (admission.py) are what every scheduler shares with its callers, the builtin one
and vLLM's alike."""

from .admission import Admission, Busy, SchedulerClosed, SchedulerStats, Ticket, TooManyForUser
from .scheduler import Scheduler

__all__ = ["Admission", "Busy", "Scheduler", "SchedulerClosed", "SchedulerStats", "Ticket", "TooManyForUser"]
