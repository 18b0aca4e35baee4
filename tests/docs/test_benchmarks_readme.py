"""benchmarks/README.md's tables are what ``python -m benchmarks.report --readme`` makes of the committed
``benchmarks/results/*.json``, so they cannot go stale; the targets are judged from those rows."""

from __future__ import annotations

import pytest

from benchmarks import report


def test_readme_tables_are_the_generators_output_for_the_committed_results():
    text = report.README.read_text()
    assert text == report.render(text, report.results()), (
        "benchmarks/README.md is stale: run python -m benchmarks.report --readme"
    )
    assert report.main(["--check"]) == 0


def test_check_fails_on_a_stale_readme(tmp_path, monkeypatch):
    stale = tmp_path / "README.md"
    stale.write_text(report.README.read_text().replace("| 0.115 |", "| 0.116 |"))
    monkeypatch.setattr(report, "README", stale)
    assert report.main(["--check"]) == 1
    assert report.main(["--readme"]) == 0
    assert report.main(["--check"]) == 0 and "| 0.115 |" in stale.read_text()


def test_every_target_finds_its_rows_in_the_committed_full_results():
    """In the full results; a suite committed at quick sizes only (``peers``, until a full run on an
    idle machine) in the quick ones, every row of its targets all the same."""
    files = report.results()
    for target, _, checks in report.TARGETS:
        rows = files["cpu-full.json"]["rows"]
        groups = [group for _, group, _ in checks]
        if not any(g in r["group"] for r in rows for g in groups) and "cpu-quick.json" in files:
            rows = files["cpu-quick.json"]["rows"]
        found = [label for label, group, name in checks if report.find_row(rows, group, name)]
        assert found == [label for label, _, _ in checks], f"{target}: rows not found for some of {checks}"


def _row(group, name, ratio):
    return {"group": group, "name": name, "seconds": 1.0, "ratio": ratio}


@pytest.mark.parametrize(
    ("ratios", "verdict"),
    [((0.6, 0.5), "met"), ((0.6, 0.7), "met by 1 of 2"), ((0.7, 0.8), "not met")],
)
def test_speed_up_targets_are_judged_from_the_ratios(ratios, verdict):
    rows = [
        _row("LM activation patching", "TransformerBridge: batched, prefix reused", ratios[0]),
        _row("LM activation patching", "hooked.wrap: batched, prefix reused", ratios[1]),
    ]
    table = report.format_targets(rows)
    line = next(x for x in table.splitlines() if x.startswith("| prefix reuse"))
    assert line.endswith(f"| {verdict} |")
    assert f"bridge {1 / ratios[0]:.3g}x" in line


def test_row_targets_compare_with_the_named_row():
    group = "GRU forward with per-step hooks, seq len 256"
    rows = [
        _row(group, "HookedGRU, edit at 1 step", 0.9),
        _row(group, "HookedGRU, edit at 3 steps", 1.3),
        _row(group, "unrolled nn.GRUCell loop", 1.2),
    ]
    line = next(x for x in report.format_targets(rows).splitlines() if "RNN steps" in x)
    assert "length 256, 1 step 0.900 (loop 1.200)" in line and line.endswith("| met by 1 of 2 |")


def test_no_rows_no_targets_table():
    assert report.format_targets([_row("something else", "x", 1.0)]) is None


def test_peer_targets_compare_with_nnsight_and_the_bridge_with_wrap():
    cache = "peers: cache every module's input and output"
    gen1 = "peers: generate 32 tokens with a steering hook, batch 1"
    gen4 = "peers: generate 32 tokens with a steering hook, batch 4"
    attr = "peers: attribution patching 31 x 9"
    rows = [
        _row(cache, "hooked wrap", 1.03),
        _row(cache, "nnsight", 1.04),
        _row(gen1, "hooked wrap", 1.0),
        _row(gen1, "hooked bridge", 1.05),
        _row(gen4, "hooked wrap", 1.0),
        _row(gen4, "hooked bridge", 1.2),
        _row(attr, "hooked wrap", 1.0),
        _row(attr, "hooked bridge", 1.1),
    ]
    lines = report.format_targets(rows).splitlines()
    nnsight = next(x for x in lines if "nnsight's ratio" in x)
    assert "`hooked.wrap` 1.030 (nnsight 1.040)" in nnsight and nnsight.endswith("| met |")
    bridge = next(x for x in lines if "within 10% of `wrap`" in x)
    assert "batch 4 1.200" in bridge and "attribution patching 1.100" in bridge
    assert bridge.endswith("| met by 2 of 3 |")
