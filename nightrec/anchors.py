"""The anchors of one night: the days on which candidate lists are built, and what each is for.

An anchor A is a day: its lists are made from the data before A (through A - 1) and judged, or labelled, on the days
from A on. For the night of data day E (the lists published for S = E + 1):

- ``serve``: S itself, the lists services read;
- ``train``: the ranker's training anchors on a grid A = S - horizon - k * every (k = 0, 1, ...), each with at least
  ``min_history_days`` before it; its labels are the highest level each candidate reached in [A, A + horizon). The
  ranker evaluated on the held-out window learns only from anchors whose label window ends by T (so it never sees a
  day it is evaluated on), the published ranker from every one (label windows end by S: by the last data day);
- ``eval``: T = S - eval_days, the fixed cut-off of the 30-day horizon (purchases in [T, S)), and T + j * refresh
  for the 7-day horizon with lists refreshed (purchases in [A, A + 7), every window inside [T, S)).

The embedding models train on the days before C = T - ranker_days: anchors on or after C carry their scores (the
ranker learns how far to trust them), older anchors have none (LightGBM treats them as missing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from nightrec.config import Settings, how_to_set
from nightrec.errors import HistoryTooShort

SHORT_HORIZON_DAYS = 7  # the second evaluation horizon: next 7 days, lists refreshed


@dataclass(frozen=True)
class Window:
    """An anchor with the days after it whose behaviour labels or judges its lists: [day, day + days)."""

    day: date
    days: int

    @property
    def end(self) -> date:
        return self.day + timedelta(days=self.days)


@dataclass(frozen=True)
class AnchorPlan:
    """Every anchor of one night and its role (see the module docstring)."""

    first_day: date  # the first day of data
    serve: date  # S = E + 1
    evaluation: date  # T: start of the held-out window [T, S)
    model_cutoff: date  # C: the embedding models train on the days before it
    train: tuple[Window, ...]  # the ranker's training anchors, newest first
    eval_long: Window  # T with the whole held-out window: the 30-day horizon from a fixed cut-off
    eval_short: tuple[Window, ...]  # the 7-day horizon, lists refreshed every `refresh` days

    def ranker_anchors(self, until: date) -> tuple[Window, ...]:
        """Training anchors whose label windows end by `until` (T for the evaluated ranker, S for the published)."""
        return tuple(w for w in self.train if w.end <= until)

    def days(self) -> list[date]:
        """Every anchor day of the night, oldest first."""
        found = {w.day for w in self.train} | {w.day for w in self.eval_short} | {self.eval_long.day, self.serve}
        return sorted(found)

    def embedded_days(self) -> list[date]:
        """The anchor days the embedding models score (on or after C), oldest first."""
        return [d for d in self.days() if d >= self.model_cutoff]

    def label_windows(self) -> dict[date, list[int]]:
        """Anchor day -> the window lengths whose buyers it builds lists for (training and evaluation roles)."""
        out: dict[date, list[int]] = {}
        for w in (*self.train, self.eval_long, *self.eval_short):
            out.setdefault(w.day, [])
            if w.days not in out[w.day]:
                out[w.day].append(w.days)
        return out

    def describe(self) -> dict[str, object]:
        """The plan as JSON-ready values (kept in the ranker's manifest and the run manifest)."""
        return {
            "serve": str(self.serve),
            "evaluation": str(self.evaluation),
            "model_cutoff": str(self.model_cutoff),
            "train": [[str(w.day), w.days] for w in self.train],
            "eval_long": [str(self.eval_long.day), self.eval_long.days],
            "eval_short": [[str(w.day), w.days] for w in self.eval_short],
        }


def plan_for(settings: Settings, first_day: date, last_day: date, refresh_every_days: int | None = None) -> AnchorPlan:
    """The anchors of the night whose last data day is `last_day` (E), for data starting on `first_day`.

    :param refresh_every_days: spacing of the 7-day horizon's anchors (default: the ranker settings'; 1 refreshes
        every night, as the benchmark does).
    :raises HistoryTooShort: the data cannot hold the held-out window, the models' days and one training anchor;
        the message names the settings that decide it.
    """
    t, r = settings.training, settings.ranker
    serve = last_day + timedelta(days=1)
    evaluation = serve - timedelta(days=t.eval_days)
    cutoff = evaluation - timedelta(days=t.ranker_days)
    earliest = first_day + timedelta(days=r.min_history_days)
    train = []
    anchor = serve - timedelta(days=r.horizon_days)
    while anchor >= earliest and len(train) < r.max_anchors:
        train.append(Window(anchor, r.horizon_days))
        anchor -= timedelta(days=r.anchor_every_days)
    plan = AnchorPlan(
        first_day=first_day,
        serve=serve,
        evaluation=evaluation,
        model_cutoff=cutoff,
        train=tuple(train),
        eval_long=Window(evaluation, t.eval_days),
        eval_short=tuple(_refreshed(evaluation, serve, refresh_every_days or r.refresh_every_days)),
    )
    if cutoff <= first_day or not plan.ranker_anchors(evaluation):
        raise HistoryTooShort(
            f"Data {first_day}..{last_day} is too short for the ranker: the held-out window (training.eval_days="
            f"{t.eval_days}), the models' validation days (training.ranker_days={t.ranker_days}) and one training "
            f"anchor with ranker.min_history_days={r.min_history_days} days before it and a label window of "
            f"ranker.horizon_days={r.horizon_days} ending before the held-out window need more days; lower them or "
            "deliver more history ("
            + how_to_set("training.eval_days", "training.ranker_days", "ranker.min_history_days", "ranker.horizon_days")
            + ")"
        )
    return plan


def _refreshed(start: date, end: date, every: int) -> Iterable[Window]:
    day = start
    while day + timedelta(days=SHORT_HORIZON_DAYS) <= end:
        yield Window(day, SHORT_HORIZON_DAYS)
        day += timedelta(days=every)
