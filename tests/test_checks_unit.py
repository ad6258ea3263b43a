import math

import pytest

from meshbed.checks.model import CheckResult, Figure, Threshold
from meshbed.checks.profile import load, parse
from meshbed.errors import ConfigError
from meshbed.stats import chi2_sf, chi_square, percentile, summarize


def test_chi2_sf_matches_known_values():
    # reference values of the chi-square survival function
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-6)
    assert chi2_sf(9.21034037197618, 2) == pytest.approx(0.01, rel=1e-6)
    assert chi2_sf(11.070497693516351, 5) == pytest.approx(0.05, rel=1e-6)
    assert chi2_sf(0.0, 3) == 1.0


def test_chi_square_of_an_even_spread_is_not_rejected():
    stat, p = chi_square([1000, 1010, 990], [1, 1, 1])
    assert stat == pytest.approx(0.2)
    assert p > 0.9
    _, p_bad = chi_square([1500, 750, 750], [1, 1, 1])
    assert p_bad < 1e-10


def test_percentiles_are_nearest_rank_with_counts():
    vals = list(range(1, 101))
    assert percentile(vals, 50) == 50 and percentile(vals, 99) == 99 and percentile(vals, 100) == 100
    s = summarize([0.5, 0.1, 0.3])
    assert s.n == 3 and s.p50 == 0.3 and s.max == 0.5
    assert math.isnan(summarize([]).p99)


def test_threshold_parsing_and_holds():
    t = Threshold.parse("convergence_p99", "<= 2.0 s")
    assert (t.op, t.value, t.unit) == ("<=", 2.0, "s") and t.holds(2.0) and not t.holds(2.01)
    assert str(t) == "<= 2 s"
    with pytest.raises(ConfigError, match="convergence_p99"):
        Threshold.parse("convergence_p99", "fast")


def _result(*figs):
    r = CheckResult("DISC-1", "t", "discovery", thresholds=[Threshold("p99", "<=", 2.0, "s")])
    r.figures = list(figs)
    return r


def test_verdicts_need_a_measured_figure_and_enough_samples():
    assert _result().judge()[0] == "error"
    assert _result(Figure("p99", None, "s", 0)).judge()[0] == "error"
    assert _result(Figure("p99", 1.0, "s", 3, min_n=10)).judge() == ("error", "p99: only 3 samples, the check needs 10")
    assert _result(Figure("p99", 1.0, "s", 10, min_n=10)).judge() == ("pass", "")
    v, reason = _result(Figure("p99", 2.5, "s", 10)).judge()
    assert v == "fail" and "p99 = 2.5 s, needs <= 2 s" in reason
    r = CheckResult("DISC-1", "t", "discovery")
    assert r.judge()[0] == "error"  # no threshold: never a pass


def test_default_profile_covers_the_whole_catalog():
    from pathlib import Path

    from meshbed.checks.catalog import CATALOG
    p = load(Path(__file__).resolve().parents[1] / "examples" / "profiles" / "default.yaml")
    assert set(p.checks) == set(CATALOG)
    assert all(c.thresholds for c in p.checks.values())


def test_profile_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="checks.NOPE-1"):
        parse({"checks": {"NOPE-1": {}}}, "p.yaml")
    with pytest.raises(ConfigError, match="checks.DISC-1.colour"):
        parse({"checks": {"DISC-1": {"colour": 1}}}, "p.yaml")
    base = tmp_path / "base.yaml"
    base.write_text("checks:\n  DISC-1:\n    thresholds: {convergence_p99: '<= 2 s'}\n    params: {repeats: 5}\n")
    over = tmp_path / "over.yaml"
    over.write_text("extends: base.yaml\nchecks:\n  DISC-1:\n    thresholds: {convergence_p99: '<= 1 s'}\n")
    p = load(over)
    assert p.for_check("DISC-1").thresholds[0].value == 1.0
    assert p.for_check("DISC-1").params == {"repeats": 5}


def test_units_are_converted_or_refused():
    r = CheckResult("DISC-1", "t", "discovery", thresholds=[Threshold("p99", "<=", 500.0, "ms")])
    r.figures = [Figure("p99", 3.0, "s", 10)]
    assert r.judge()[0] == "fail"  # 3 s is 3000 ms, not 3
    r.figures = [Figure("p99", 0.2, "s", 10)]
    assert r.judge() == ("pass", "")
    r.figures = [Figure("p99", 0.2, "requests", 10)]
    assert r.judge()[0] == "error"
    r.thresholds = [Threshold("p99", ">=", 1.0, "requests")]
    r.figures = [Figure("p99", float("inf"), "requests", 10)]
    assert r.judge()[0] == "error"


@pytest.mark.parametrize("text", ["<= 1.2.3 s", "<= . s", "about 2 s", ">= s"])
def test_malformed_thresholds_are_config_errors(text):
    with pytest.raises(ConfigError):
        Threshold.parse("x", text)
