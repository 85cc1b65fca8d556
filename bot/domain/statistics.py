"""The figures a secretary answers for, as plain data: what ``bot.services.stats`` computes and
what the messages, the workbook and the chart show (definitions in ``bot.services.stats``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction
from typing import NamedTuple

from bot.storage.models import Member


@dataclass(frozen=True)
class Figures:
    """Participation of one round in one unit's subtree (definitions: ``bot.services.stats``)."""

    round_id: int
    unit_id: int
    unit_code: str
    unit_name: str
    audience: int
    finished: int
    passed: int
    in_progress: int
    not_started: int
    average_score: float | None  # percent 0-100, mean of counted scores; None when nobody finished
    rate: float  # percent 0-100
    target: float  # percent 0-100
    needed: int
    time_left: timedelta | None  # None once the round is closed
    status: str  # scheduled | open | closed (``round_status``)
    exempt: int = 0  # active members of the same units exempt from Party work: outside the audience

    @property
    def target_met(self) -> bool:
        return self.audience > 0 and self.needed == 0

    @property
    def exact_rate(self) -> Fraction:
        """finished/audience as an exact fraction (0 for an empty audience): for sorting and ties."""
        return Fraction(self.finished, self.audience) if self.audience else Fraction(0)


class NotFinished(NamedTuple):
    """An audience member without a submitted attempt; ``in_progress`` when an attempt is open."""

    member: Member
    unit_code: str
    unit_name: str
    in_progress: bool
