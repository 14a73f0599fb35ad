"""The inference service: no Django. `Scheduler` owns one model and batches the requests of
all users on one background thread; each caller follows its request through a `Ticket`."""

from .scheduler import Busy, Scheduler, SchedulerClosed, SchedulerStats, TooManyForUser
from .ticket import Ticket

__all__ = ["Busy", "Scheduler", "SchedulerClosed", "SchedulerStats", "Ticket", "TooManyForUser"]
