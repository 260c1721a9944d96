"""A run's window of daily partitions: [start, end), its days, its label, and its predicate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from ml.dataset import EVENT_DATE


@dataclass(frozen=True)
class DayWindow:
    start: date
    end: date  # exclusive

    @property
    def days(self) -> list[date]:
        return [date.fromordinal(d) for d in range(self.start.toordinal(), self.end.toordinal())]

    @property
    def single_day(self) -> bool:
        return (self.end - self.start).days == 1

    @property
    def label(self) -> str:
        """`2013-01-01`, or `2013-01-01...2013-01-10` for a range."""
        last = self.end - timedelta(days=1)
        return self.start.isoformat() if self.start == last else f"{self.start.isoformat()}...{last.isoformat()}"

    def predicate(self, column: str = EVENT_DATE) -> str:
        return f"{column} >= '{self.start.isoformat()}' AND {column} < '{self.end.isoformat()}'"

    def widened(self, days_before: int) -> DayWindow:
        """The same end, `days_before` more days at the start (a trailing window)."""
        return DayWindow(self.start - timedelta(days=days_before), self.end)

    @classmethod
    def of_days(cls, days) -> DayWindow:
        """The window from the first to the last of `days` (consecutive, sorted)."""
        return cls(days[0], days[-1] + timedelta(days=1))


def days_label(days) -> str:
    """The label of consecutive days, as DayWindow.label gives it."""
    return DayWindow.of_days(days).label
