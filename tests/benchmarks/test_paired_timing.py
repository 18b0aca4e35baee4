"""``benchmarks.timing.time_paired``: per-round ratios to a base arm, timed in a rotating order, with
their median and spread; checked on a fake clock whose calls take given times (known answers), and
the rows and README tables made of them (``benchmarks.common.Row``, ``benchmarks.report``)."""

from __future__ import annotations

import gc
import statistics

import pytest

from benchmarks import report, timing
from benchmarks.common import Row


class FakeClock:
    """A clock that moves only when an arm runs: arm ``name``'s k-th call takes ``times[name][k]``."""

    def __init__(self, times: dict[str, list[float]]):
        self.now, self.times, self.calls = 0.0, {k: list(v) for k, v in times.items()}, []

    def __call__(self) -> float:
        return self.now

    def arm(self, name: str):
        def call():
            self.calls.append(name)
            self.now += self.times[name].pop(0)

        return call

    def arms(self) -> dict:
        return {name: self.arm(name) for name in self.times}


def test_known_answer_ratios_and_spread_from_a_fake_clock():
    clock = FakeClock({"plain": [2.0, 2.0, 4.0, 2.0], "ours": [2.2, 2.4, 3.6, 2.0]})
    t = timing.time_paired(clock.arms(), base="plain", rounds=4, warmup=0, clock=clock, collect=False)
    assert t["ours"].rounds_s == pytest.approx([2.2, 2.4, 3.6, 2.0])
    assert t["plain"].rounds_s == pytest.approx([2.0, 2.0, 4.0, 2.0])
    # ratios round by round 1.1, 1.2, 0.9, 1.0: sorted 0.9, 1.0, 1.1, 1.2
    r = t["ours"].ratio
    assert r.median == pytest.approx(1.05) and r.lo == pytest.approx(0.9) and r.hi == pytest.approx(1.2)
    assert r.q1 == pytest.approx(0.975) and r.q3 == pytest.approx(1.125) and r.rounds == 4
    assert t["ours"].median_s == pytest.approx(2.3)  # median of the rounds' seconds
    assert t["plain"].ratio.median == 1.0 and t["plain"].ratio.q1 == t["plain"].ratio.q3 == 1.0
    # the ratio of the medians (2.3 / 2.0 = 1.15) is not what the rounds say
    assert t["ours"].median_s / t["plain"].median_s == pytest.approx(1.15)


def test_a_round_is_the_median_of_its_repeats_each_timed_alone_after_the_warmup():
    clock = FakeClock({"a": [99.0, 1.0, 5.0, 2.0, 3.0, 3.0, 3.0], "b": [99.0] + [1.0] * 6})
    t = timing.time_paired(clock.arms(), base="b", rounds=2, repeats=3, warmup=1, clock=clock, collect=False)
    assert t["a"].rounds_s == [2.0, 3.0] and t["a"].repeats == 3  # the 99 s warm-up is not timed
    assert t["a"].ratio.median == pytest.approx(2.5)


def test_rounds_rotate_the_order_and_reverse_it_every_other_cycle():
    names = ["a", "b", "c"]
    orders = [timing.round_order(names, r) for r in range(6)]
    assert orders[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert orders[3:] == [["c", "b", "a"], ["a", "c", "b"], ["b", "a", "c"]]
    for place in range(3):  # every arm takes every place, once a cycle
        assert sorted(o[place] for o in orders[:3]) == names
    clock = FakeClock({n: [1.0] * 6 for n in names})
    timing.time_paired(clock.arms(), base="a", rounds=6, warmup=0, clock=clock, collect=False)
    assert clock.calls == [n for o in orders for n in o]


def test_a_drifting_machine_falls_on_every_arm_alike():
    """Three arms of equal cost on a machine that slows by 2% each call: in a fixed order the last
    arm would look 4% slower than the first in every round; rotated, the medians stay near 1."""
    names = ["plain", "x", "y"]
    clock = FakeClock({n: [] for n in names})
    calls = []

    def arm(name):
        def call():
            calls.append(name)
            clock.now += 1.0 * 1.02 ** len(calls)

        return call

    t = timing.time_paired(
        {n: arm(n) for n in names}, base="plain", rounds=6, warmup=0, clock=clock, collect=False
    )
    for n in ("x", "y"):
        assert abs(t[n].ratio.median - 1) < 0.015, t[n].ratio
        assert t[n].ratio.lo < 1 < t[n].ratio.hi  # the drift shows as spread, both ways


def test_garbage_is_collected_before_every_timed_call(monkeypatch):
    seen = []
    clock = FakeClock({"a": [1.0] * 5, "b": [1.0] * 5})
    monkeypatch.setattr(gc, "collect", lambda *a: seen.append(list(clock.calls)))
    timing.time_paired(clock.arms(), base="a", rounds=2, repeats=2, warmup=1, clock=clock)
    assert len(seen) == 8  # 2 rounds x 2 arms x 2 repeats; none before the warm-up calls
    assert seen[0] == ["a", "b"]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="base 'z' is not one of the arms"):
        timing.time_paired({"a": lambda: None}, base="z", rounds=1)
    with pytest.raises(ValueError, match="rounds and repeats must be >= 1"):
        timing.time_paired({"a": lambda: None}, base="a", rounds=0)
    with pytest.raises(ValueError, match="3 rounds of the arm, 2 of the base"):
        timing.paired_ratios([1.0, 1.0, 1.0], [1.0, 1.0])


def test_a_paired_row_carries_its_rounds_and_its_ratio_is_the_median_of_the_rounds():
    spread = timing.paired_ratios([2.2, 2.4, 3.6, 2.0], [2.0, 2.0, 4.0, 2.0]).to_json()
    row = Row("g", "ours", 2.3, "plain", 2.0, rounds_s=[2.2, 2.4, 3.6, 2.0], ratio_spread=spread)
    d = row.to_json()
    assert d["ratio"] == pytest.approx(1.05) and d["rounds_s"] == [2.2, 2.4, 3.6, 2.0]
    assert d["ratio_spread"]["q1"] == pytest.approx(0.975) and d["ratio_spread"]["rounds"] == 4
    old = Row("g", "ours", 2.3, "plain", 2.0).to_json()  # other suites' rows keep their fields
    assert old["ratio"] == pytest.approx(1.15) and "rounds_s" not in old and "ratio_spread" not in old


def _paired_row(group, name, rounds_s, base_s):
    spread = timing.paired_ratios(rounds_s, base_s)
    seconds = statistics.median(rounds_s)
    return Row(
        group, name, seconds, "plain PyTorch", 1.0, rounds_s=rounds_s, ratio_spread=spread.to_json()
    ).to_json()


def test_tables_show_the_spread_of_paired_rows_and_plain_ratios_for_the_others():
    rows = [
        _paired_row("g", "ours", [2.2, 2.4, 3.6, 2.0], [2.0, 2.0, 4.0, 2.0]),
        Row("g", "old", 1.5, "plain PyTorch", 1.0).to_json(),
    ]
    lines = report.format_rows(rows).splitlines()
    assert lines[2].endswith("| 1.050 [0.975, 1.125] |") and lines[3].endswith("| 1.500 |")


def test_bridge_over_wrap_is_taken_round_by_round_where_both_have_rounds():
    gen1 = "peers: generate 32 tokens with a steering hook, batch 1"
    plain = [1.0, 1.0, 1.0, 1.0]
    # bridge / wrap per round: 1.0, 1.2, 1.05, 1.1 -> median 1.075, quartiles 1.0375 and 1.125
    rows = [
        _paired_row(gen1, "hooked wrap", [1.0, 1.0, 2.0, 1.0], plain),
        _paired_row(gen1, "hooked bridge", [1.0, 1.2, 2.1, 1.1], plain),
    ]
    line = next(x for x in report.format_targets(rows).splitlines() if "within 10% of `wrap`" in x)
    assert "steered generation, batch 1 1.075 [1.038, 1.125]" in line
    assert line.endswith("| met (the bound within the quartiles: steered generation, batch 1) |")
    # the same rows without rounds: the ratio of the two medians (1.15 / 1.0)
    for r in rows:
        del r["rounds_s"], r["ratio_spread"]
        r["ratio"] = r["seconds"]
    line = next(x for x in report.format_targets(rows).splitlines() if "within 10% of `wrap`" in x)
    assert "steered generation, batch 1 1.150" in line and line.endswith("| not met |")


def test_wrap_against_nnsight_is_judged_round_by_round():
    cache = "peers: cache every module's input and output"
    plain = [1.0] * 5
    rows = [  # wrap's median ratio 1.2 is above nnsight's 1.1, but wrap is faster in 3 of 5 rounds
        _paired_row(cache, "hooked wrap", [1.0, 1.0, 1.2, 1.2, 1.2], plain),
        _paired_row(cache, "nnsight", [1.1, 1.1, 1.3, 1.0, 1.0], plain),
    ]
    line = next(x for x in report.format_targets(rows).splitlines() if "nnsight's ratio" in x)
    assert "`hooked.wrap` 1.200 (nnsight 1.100; over it round by round 0.923 [0.909, 1.200])" in line
    assert line.endswith("| met (the bound within the quartiles: `hooked.wrap`) |")


def test_the_section_head_gives_the_load_and_explains_the_brackets():
    rec = {"device_name": "CPU", "torch": "2", "quick": False, "created": "now", "load": [1.5, 2.25]}
    text = report.tables({"cpu-full.json": {**rec, "rows": [_paired_row("g", "x", [1.0], [1.0])]}})
    assert "full sizes, now, load 1.50 -> 2.25" in text and "[first quartile, third quartile]" in text
    old = {k: v for k, v in rec.items() if k != "load"}
    text = report.tables({"cpu-full.json": {**old, "rows": [Row("g", "x", 1.0, "y", 1.0).to_json()]}})
    assert "load" not in text and "quartile" not in text


def test_threads_below_one_are_refused(capsys):
    from benchmarks.__main__ import main

    with pytest.raises(SystemExit):
        main(["--threads", "0", "--no-save", "--only", "spotlight"])
    assert "--threads must be >= 1, got 0" in capsys.readouterr().err


def test_a_saved_run_records_the_load_and_its_paired_rows_reach_the_readme(tmp_path, monkeypatch):
    import types

    import torch

    from benchmarks import __main__ as cli
    from hooked.io import read_json

    def run(ctx):
        clock = FakeClock({"plain PyTorch": [2.0, 2.0, 4.0, 2.0], "ours": [2.2, 2.4, 3.6, 2.0]})
        t = timing.time_paired(clock.arms(), base="plain PyTorch", rounds=4, warmup=0, clock=clock)
        b = t["plain PyTorch"].median_s
        return [
            Row("g", k, x.median_s, "plain PyTorch", b, rounds_s=x.rounds_s, ratio_spread=x.ratio.to_json())
            for k, x in t.items()
        ]

    fake = types.SimpleNamespace(run=run)
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: fake)
    monkeypatch.setattr(cli, "RESULTS", tmp_path)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    monkeypatch.setattr(report, "README", tmp_path / "README.md")
    threads = torch.get_num_threads()
    try:
        assert cli.main(["--quick", "--only", "spotlight", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    rec = read_json(tmp_path / "cpu-quick.json")
    assert len(rec["load"]) == 2 and all(x is None or x >= 0 for x in rec["load"])
    ours = next(r for r in rec["rows"] if r["name"] == "ours")
    assert ours["ratio"] == pytest.approx(1.05) and ours["ratio_spread"]["q3"] == pytest.approx(1.125)
    readme = (tmp_path / "README.md").read_text()
    assert "| g | ours |" in readme and "| 1.050 [0.975, 1.125] |" in readme
    assert report.main(["--check"]) == 0


def test_a_bound_outside_the_quartiles_leaves_the_verdict_plain():
    sweep = "peers: patching sweep 31 x 9 (279 patches)"
    plain = [1.0] * 4
    rows = [  # wrap 0.40-0.45: below 0.5 in every quartile; the bridge's quartiles straddle 0.5
        _paired_row(sweep, "hooked wrap, metric positions declared", [0.40, 0.42, 0.44, 0.45], plain),
        _paired_row(sweep, "hooked bridge, metric positions declared", [0.45, 0.49, 0.52, 0.56], plain),
    ]
    line = next(x for x in report.format_targets(rows).splitlines() if "declares its positions" in x)
    assert "`hooked.wrap` 0.430 [0.415, 0.443]; bridge 0.505 [0.480, 0.530]" in line
    assert line.endswith("| met by 1 of 2 (the bound within the quartiles: bridge) |")
