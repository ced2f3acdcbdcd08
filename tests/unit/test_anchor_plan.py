"""The night's anchors (nightrec.anchors): no training anchor's labels reach into the days its ranker is judged on,
every evaluation window lies inside the held-out window, and a short history is refused with the settings named."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest

from nightrec.anchors import plan_for
from nightrec.config import load_settings
from nightrec.errors import HistoryTooShort

FIRST, LAST = date(2014, 4, 15), date(2014, 8, 15)  # the Tmall history


def test_the_tmall_night_has_a_weekly_grid_of_training_anchors_and_two_horizons():
    plan = plan_for(load_settings("local", env={}), FIRST, LAST)
    serve, cut = date(2014, 8, 16), date(2014, 7, 17)
    assert (plan.serve, plan.evaluation, plan.model_cutoff) == (serve, cut, cut - timedelta(days=28))
    assert [w.day for w in plan.train][:2] == [serve - timedelta(days=7), serve - timedelta(days=14)]
    assert all(w.day - FIRST >= timedelta(days=28) for w in plan.train) and len(plan.train) == 13
    held_out = plan.ranker_anchors(plan.evaluation)
    # the evaluated ranker never sees a label from the held-out window; the published one learns up to the last day
    assert held_out and all(w.end <= cut for w in held_out)
    assert max(w.end for w in plan.ranker_anchors(serve)) == serve
    assert (plan.eval_long.day, plan.eval_long.end) == (cut, serve)
    assert [w.day for w in plan.eval_short] == [cut + timedelta(days=7 * j) for j in range(4)]
    assert all(cut <= w.day and w.end <= serve for w in plan.eval_short)
    nightly = plan_for(load_settings("local", env={}), FIRST, LAST, refresh_every_days=1)
    assert len(nightly.eval_short) == 24  # the benchmark refreshes every night: T .. S - 7
    assert set(plan.days()) == {w.day for w in (*plan.train, *plan.eval_short)} | {cut, serve}
    assert all(d >= plan.model_cutoff for d in plan.embedded_days())


def test_a_short_history_is_refused_with_the_settings_that_decide_it():
    settings = load_settings("local", env={})
    with pytest.raises(HistoryTooShort, match=r"training.eval_days=30.*training.ranker_days=28.*min_history_days=28"):
        plan_for(settings, date(2014, 6, 20), LAST)  # the models would have no day before C = 2014-06-19
    shorter = settings.with_overrides(
        training=replace(settings.training, eval_days=14, ranker_days=7),
        ranker=replace(settings.ranker, min_history_days=7),
    )
    assert plan_for(shorter, date(2014, 6, 20), LAST).ranker_anchors(date(2014, 8, 2))
