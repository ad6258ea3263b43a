import math

import pytest

from meshbed.checks.catalog import CATALOG
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
    assert p.for_check("DISC-1").params.repeats == 5


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


def _multi(*figs, th=("a <= 1 s", "b >= 99 %")):
    r = CheckResult("X-1", "t", "g", figures=list(figs),
                    thresholds=[Threshold.parse(t.split()[0], " ".join(t.split()[1:])) for t in th])
    return r.judge()


def test_a_failing_figure_wins_over_a_missing_one():
    """fail names the failing figure first; a missing one is mentioned, not the verdict."""
    v, why = _multi(Figure("a", 5.0, "s", 10), Figure("b", None, "%", 0))
    assert v == "fail" and why.startswith("a = 5 s, needs <= 1 s") and "not measured" in why
    v, why = _multi(Figure("a", 5.0, "s", 10), Figure("b", 99.5, "%", 1, min_n=100))
    assert v == "fail" and "only 1 samples" in why


def test_nothing_failing_but_something_unmeasured_is_an_error():
    assert _multi(Figure("a", 0.5, "s", 10), Figure("b", None, "%", 0))[0] == "error"
    assert _multi(Figure("a", 0.5, "s", 10), Figure("b", 100.0, "%", 3, min_n=10))[0] == "error"


def test_an_undersampled_count_of_bad_events_already_over_its_bound_fails():
    """40 late requests seen in a thin window: more samples could only add late requests."""
    r = CheckResult("X-1", "t", "g", figures=[Figure("late", 40, "requests", 3, min_n=10, bad_count=True)],
                    thresholds=[Threshold.parse("late", "<= 0 requests")])
    assert r.judge()[0] == "fail"
    r.figures = [Figure("late", 0, "requests", 3, min_n=10, bad_count=True)]
    assert r.judge()[0] == "error"  # zero in a thin window proves nothing
    r.figures = [Figure("late", 40, "requests", 3, min_n=10)]  # not a count of bad events: cannot judge
    assert r.judge()[0] == "error"


def test_a_measured_absence_is_judged():
    """No ejection is 0 %, not a missing figure; a policy never shown counts as its deadline."""
    r = CheckResult("X-1", "t", "g", figures=[Figure("ejecting", 0.0, "%", 2, min_n=2)],
                    thresholds=[Threshold.parse("ejecting", ">= 100 %")])
    assert r.judge()[0] == "fail"


def test_params_are_typed_and_refused_when_unknown(tmp_path):
    from meshbed.checks.profile import load
    bad = tmp_path / "p.yaml"
    bad.write_text("extends: default\nchecks:\n  DISC-1: {params: {repeat: 5}}\n")
    with pytest.raises(ConfigError, match="params.repeat: not a parameter of DISC-1; known: repeats"):
        load(bad)
    bad.write_text("extends: default\nchecks:\n  DISC-1: {params: {repeats: five}}\n")
    with pytest.raises(ConfigError, match="params.repeats: must be an integer"):
        load(bad)
    bad.write_text("extends: default\nchecks:\n  DISC-1: {thresholds: {convergnce_p99: '<= 1 s'}}\n")
    with pytest.raises(ConfigError, match="DISC-1 measures no such figure"):
        load(bad)
    bad.write_text("extends: default\nchecks:\n  DISC-1: {thresholds: {convergence_p99: '<= 1 %'}}\n")
    with pytest.raises(ConfigError, match="does not fit"):
        load(bad)


def test_extends_chains_resolve_fully_and_refuse_cycles(tmp_path):
    from meshbed.checks.profile import load
    (tmp_path / "a.yaml").write_text("extends: default\nchecks:\n  DISC-1: {params: {repeats: 2}}\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nchecks:\n  DISC-2: {params: {repeats: 1}}\n")
    p = load(tmp_path / "b.yaml")
    assert len(p.checks) == len(CATALOG) and p.for_check("DISC-1").params.repeats == 2
    (tmp_path / "c.yaml").write_text("extends: d.yaml\nchecks: {}\n")
    (tmp_path / "d.yaml").write_text("extends: c.yaml\nchecks: {}\n")
    with pytest.raises(ConfigError, match="cycle"):
        load(tmp_path / "c.yaml")
    (tmp_path / "e.yaml").write_text("extends: e.yaml\nchecks: {}\n")
    with pytest.raises(ConfigError, match="cycle"):
        load(tmp_path / "e.yaml")
