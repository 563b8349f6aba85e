"""bench/soak.py's memory verdict on synthetic RSS series: no server, no run.

The verdict is a pure function of the samples. What is pinned here: a run without a reload is judged as it always
was (slope over the last third); a reload of the PII pipeline (RSS falling by 45 MB at once, then climbing back
to the same plateau) no longer reads as growth; growth that goes on across a reload is still GROWING, whether the
later cycle's peak shows it (rule "peak") or only the slope after the reload does (rule "last segment"); and too
few samples give no verdict, said so. Each test asserts the verdict, the rule that decided it and the reloads
reported, so a rule that stopped deciding would fail it.
"""

from __future__ import annotations

import pytest

from bench.soak import (
    RELOAD_DROP_MB,
    Reload,
    Sample,
    describe,
    find_reloads,
    last_third,
    slope_per_1000,
    verdict,
)

MAX_SLOPE = 0.2  # the script's default --max-slope


def series(points: list[tuple[int, float]]) -> list[Sample]:
    """Samples as the script takes them: (requests, RSS MB); anon/file/seconds do not enter the verdict."""
    return [Sample(requests=r, seconds=r / 100, rss=rss, anon=rss - 150.0, file=150.0) for r, rss in points]


def linear(start: int, stop: int, every: int, base: float, per_1000: float) -> list[tuple[int, float]]:
    return [(r, base + per_1000 * r / 1000) for r in range(start, stop + 1, every)]


# The sixth session's 130,000-request run (docs/BENCHMARKS.md), sampled every 5,000: a plateau at 489.4-489.5 MB
# from 65,000 to 95,000, the reload takes 45.2 MB off at 100,000, RSS is back at 489.5 MB by 130,000.
PLATEAU_RELOAD_CLIMB_BACK = [
    (5_000, 443.9), (10_000, 457.0), (15_000, 469.8), (20_000, 471.2), (25_000, 472.7), (30_000, 474.2),
    (35_000, 474.3), (40_000, 474.3), (45_000, 474.4), (50_000, 474.4), (55_000, 474.5), (60_000, 482.5),
    (65_000, 489.4), (70_000, 489.4), (75_000, 489.4), (80_000, 489.5), (85_000, 489.5), (90_000, 489.5),
    (95_000, 489.5), (100_000, 444.3), (105_000, 483.0), (110_000, 484.5), (115_000, 486.0), (120_000, 487.5),
    (125_000, 488.5), (130_000, 489.5),
]


def test_flat_series_is_bounded() -> None:
    samples = series([(r, 480.0 + (0.05 if (r // 1000) % 2 else -0.05)) for r in range(1_000, 30_001, 1_000)])
    v = verdict(samples, MAX_SLOPE, requests=30_000)
    assert v.bounded is True
    assert v.label == "bounded"
    assert v.rule == "last third"
    assert v.reloads == ()
    assert v.slope is not None and abs(v.slope) < 0.01
    assert v.window == (20_000, 30_000) and v.samples_used == 11
    assert "no reload found" in v.reason


def test_steady_growth_without_reload_is_growing() -> None:
    samples = series(linear(1_000, 30_000, 1_000, 400.0, 0.5))
    v = verdict(samples, MAX_SLOPE, requests=30_000)
    assert v.bounded is False
    assert v.label == "GROWING"
    assert v.rule == "last third"
    assert v.reloads == ()
    assert v.slope == pytest.approx(0.5)
    assert "> 0.2" in v.reason


def test_growth_continuing_after_a_reload_is_growing_by_the_peaks() -> None:
    # +0.5 MB per 1,000 requests throughout; the reload before 60,000 frees 20 MB (17.5 net of the growth
    # between the samples), and the growth carries the later cycle 27.5 MB above the earlier peak by the end:
    # memory the reload does not free grows.
    points = linear(5_000, 55_000, 5_000, 400.0, 0.5) + linear(60_000, 150_000, 5_000, 380.0, 0.5)
    samples = series(points)
    v = verdict(samples, MAX_SLOPE, requests=150_000)
    assert v.bounded is False
    assert v.rule == "peak"
    assert v.reloads == (Reload(55_000, 60_000, pytest.approx(17.5)),)
    assert v.peak_before == pytest.approx(427.5) and v.peak_after == pytest.approx(455.0)
    assert v.window == (55_000, 150_000)
    assert v.slope == pytest.approx(27.5 / 95)
    assert "memory the reload does not free grew" in v.reason


def test_growth_across_a_reload_that_hides_it_from_the_peaks_is_growing_by_the_last_segment() -> None:
    # The same leak, but a 45 MB reload at 100,000 and 60,000 requests after it: the later peak (435 MB) is still
    # under the earlier one (449.5 MB), so the peaks alone would call it bounded. The segment before the reload
    # never levelled off, so the slope after the reload decides.
    points = linear(5_000, 95_000, 5_000, 402.0, 0.5) + linear(100_000, 160_000, 5_000, 355.0, 0.5)
    v = verdict(series(points), MAX_SLOPE, requests=160_000)
    assert v.peak_after is not None and v.peak_before is not None and v.peak_after < v.peak_before
    assert v.bounded is False
    assert v.rule == "last segment"
    assert v.reloads == (Reload(95_000, 100_000, pytest.approx(44.5)),)  # 47 MB freed, less 2.5 MB grown
    assert v.level_slope == pytest.approx(0.5)
    assert v.slope == pytest.approx(0.5)
    assert v.window == (140_000, 160_000)
    assert "still rising before the reload at 95,000..100,000" in v.reason


def test_plateau_drop_and_climb_back_to_the_same_plateau_is_bounded() -> None:
    samples = series(PLATEAU_RELOAD_CLIMB_BACK)
    # the case as it was misjudged: the last third (from 86,667) spans the fall and the climb back
    old_slope = slope_per_1000(last_third(samples, 0, 130_000))
    assert old_slope is not None and old_slope > MAX_SLOPE

    v = verdict(samples, MAX_SLOPE, requests=130_000)
    assert v.bounded is True
    assert v.rule == "peak"
    assert v.reloads == (Reload(95_000, 100_000, pytest.approx(45.2)),)
    assert v.peak_before == pytest.approx(489.5) and v.peak_after == pytest.approx(489.5)
    assert v.slope == pytest.approx(0.0)
    assert v.level_slope is not None and abs(v.level_slope) < 0.01
    assert "levelled off before the reload" in v.reason

    reloads_line, verdict_line = describe(v)
    assert reloads_line == (f"reloads found (RSS fell by >= {RELOAD_DROP_MB:g} MB between two samples): "
                            "95,000..100,000 requests (-45.2 MB)")
    assert verdict_line.startswith("memory verdict (rule: peak, 95,000..130,000 requests, 2 samples): bounded: ")


def test_later_plateau_higher_after_a_levelled_cycle_is_growing() -> None:
    # levelled at 480 MB before the reload, then a new plateau 20 MB higher: the peak rule catches it even though
    # the segment after the reload is flat at its end (its slope alone would say bounded)
    points = [(r, 480.0) for r in range(5_000, 95_001, 5_000)]
    points += [(100_000, 435.0), (105_000, 470.0), (110_000, 490.0)]
    points += [(r, 500.0) for r in range(115_000, 160_001, 5_000)]
    v = verdict(series(points), MAX_SLOPE, requests=160_000)
    assert v.bounded is False
    assert v.rule == "peak"
    assert v.reloads == (Reload(95_000, 100_000, pytest.approx(45.0)),)
    assert v.window == (95_000, 115_000)  # 480 last seen at 95,000, 500 first reached at 115,000
    assert v.slope == pytest.approx(1.0)
    assert v.segment_slope == pytest.approx(0.0)
    assert v.level_slope == pytest.approx(0.0)


def test_two_reload_cycles_at_the_same_plateau_are_bounded() -> None:
    # three cycles of the same shape: a reload takes 49 MB off, RSS climbs back to 489 MB in 15,000 requests
    points = [(5_000, 470.0), (10_000, 485.0)] + [(r, 489.0) for r in range(15_000, 50_001, 5_000)]
    points += [(55_000, 440.0), (60_000, 470.0), (65_000, 485.0)]
    points += [(r, 489.0) for r in range(70_000, 100_001, 5_000)]
    points += [(105_000, 440.0), (110_000, 470.0), (115_000, 485.0)]
    points += [(r, 489.0) for r in range(120_000, 130_001, 5_000)]
    samples = series(points)
    assert find_reloads(samples) == [10, 20]
    v = verdict(samples, MAX_SLOPE, requests=130_000)
    assert v.bounded is True
    assert v.rule == "peak"
    assert v.reloads == (Reload(50_000, 55_000, pytest.approx(49.0)), Reload(100_000, 105_000, pytest.approx(49.0)))
    # judged on the last two cycles: the one between the reloads, and the one after the last
    assert v.window == (100_000, 120_000)
    assert v.slope == pytest.approx(0.0)
    assert "reload at 100,000..105,000" in v.reason
    assert describe(v)[0].endswith("50,000..55,000 requests (-49.0 MB); 100,000..105,000 requests (-49.0 MB)")


def test_a_small_fall_is_not_a_reload() -> None:
    # a 3 MB fall (the allocator giving a little back) is below RELOAD_DROP_MB: judged by the whole-run rule
    points = [(r, 480.0) for r in range(1_000, 30_001, 1_000)]
    points[24] = (25_000, 477.0)
    v = verdict(series(points), MAX_SLOPE, requests=30_000)
    assert v.reloads == ()
    assert v.rule == "last third"
    assert v.bounded is True
    assert describe(v)[0].endswith("between two samples): none")


def test_too_few_samples_give_no_verdict() -> None:
    # one sample in the last third (requests 3,000, sampled at 1,000 and 2,000)
    v = verdict(series([(1_000, 430.0), (2_000, 440.0)]), MAX_SLOPE, requests=3_000)
    assert v.bounded is None
    assert v.label == "no verdict"
    assert v.rule == "none"
    assert v.slope is None
    assert v.reloads == ()
    assert "too few samples in the last third" in v.reason and "--every" in v.reason
    assert verdict(series([(2_000, 430.0)]), MAX_SLOPE).bounded is None
    assert verdict([], MAX_SLOPE).bounded is None


def test_too_few_samples_after_a_reload_give_no_verdict() -> None:
    # still rising when the reload came, and only 2 samples in the last third of the part after it (120,000 and
    # 130,000): a slope through 2 points is one difference, so neither rule decides
    points = [*linear(10_000, 90_000, 10_000, 420.0, 0.6), (100_000, 430.0), (110_000, 440.0), (120_000, 450.0),
              (130_000, 460.0)]
    v = verdict(series(points), MAX_SLOPE, requests=130_000)
    assert v.bounded is None
    assert v.rule == "none"
    assert v.reloads == (Reload(90_000, 100_000, pytest.approx(44.0)),)
    assert v.level_slope == pytest.approx(0.6)
    assert v.window == (120_000, 130_000) and v.samples_used == 2
    assert "too few samples after it (2 in its last third, 3 needed)" in v.reason
    assert describe(v)[1].startswith("memory verdict (rule: none, 120,000..130,000 requests, 2 samples): no verdict: ")
