"""The learn-rate study (results/net3-rates): the early call checked against every committed full-length seed,
the pooling of seeds by machine type, McNemar's test through the report's one decision procedure, and the
`report --with` command that links the runs. Numbers from the committed runs only, no training."""
import dataclasses
import json
import shutil

import pytest

import hw4_report
from conftest import ROOT, assert_one_line_exit_2, cli, hw4, skip_rendering

RUNS = ROOT / "results"
FULL = ("exercise", "exercise-all")


@pytest.fixture(scope="module")
def full() -> dict[str, hw4_report.Experiment]:
    return {name: hw4_report.experiment_at(RUNS / name) for name in FULL}


@pytest.fixture(scope="module")
def short() -> hw4_report.Experiment:
    return hw4_report.experiment_at(RUNS / "net3-rates")


def truncated(exp: hw4_report.Experiment, epochs: int) -> hw4_report.Experiment:
    """The run as if it had trained `epochs` epochs: its histories cut there."""
    def cut(r: hw4.Results) -> hw4.Results:
        return dataclasses.replace(r, epoch={k: v[:epochs] for k, v in r.epoch.items()},
                                   config={**r.config, "epochs": epochs})
    return hw4_report.Experiment({n: [cut(r) for r in runs] for n, runs in exp.runs.items()}, exp.dataset)


def raw_outcomes(epochs: int) -> list[tuple[bool, bool]]:
    """(call within `epochs`, 15-epoch outcome) of every committed full-length Net3-family seed, read from the
    metrics.json files themselves: train accuracy ever at least 1.5x chance (5 classes)."""
    pairs = []
    for run in FULL:
        for path in sorted((RUNS / run).glob("seed_*/metrics.json")):
            for name, entry in json.loads(path.read_text())["nets"].items():
                if name.startswith("net3"):
                    train = entry["epoch"]["train_class_acc"]
                    pairs.append((max(train[:epochs]) >= 0.3, max(train) >= 0.3))
    return pairs


@pytest.mark.parametrize("epochs", [1, 2, 3])
def test_the_early_call_is_checked_against_every_committed_full_length_seed(short, full, epochs):
    study = hw4_report.rate_study("net3-rates", truncated(short, epochs), full)
    expected = raw_outcomes(epochs)
    assert len(study.checks) == len(expected) >= 40
    assert len(study.misses) == sum(call != outcome for call, outcome in expected)
    assert study.valid == (epochs >= 2), "the call misses some seed at epoch 1 and none from epoch 2"
    lines = "\n".join(hw4_report.check_lines(study))
    assert f"matches **{len(expected) - len(study.misses)} of {len(expected)}**" in lines
    assert ("is not used" in lines) == bool(study.misses)


def test_seeds_pool_only_from_full_length_runs_of_the_short_runs_machine_type(short, full):
    study = hw4_report.rate_study("net3-rates", short, full)
    assert study.pooled == ("exercise-all",), "exercise trained on another CPU type"
    for net, runs in short.runs.items():
        pooled = full["exercise-all"].runs[net]
        assert study.rate(net) == (sum(not r.at_chance for r in runs + pooled), len(runs) + len(pooled))
    cmp = study.comparison("net3bn")
    assert cmp.seeds == study.rate("net3")[1] and [p.test for p in cmp.parts] == [hw4_report.Test.REGIMES]


def synthetic(base: list[bool], **nets: list[bool]) -> hw4_report.RateStudy:
    regimes = {"net3": dict(enumerate(base)), **{n: dict(enumerate(v)) for n, v in nets.items()}}
    checks = (hw4_report.CallCheck("full", "net3", 0, True, True),)
    return hw4_report.RateStudy("short", 3, None, checks, regimes, (), 15)


def test_a_remedy_is_decided_against_the_base_by_mcnemar_on_the_regimes_after_holm():
    base = [k < 10 for k in range(40)]  # learns in 10 of 40
    study = synthetic(base, net3bn=[True] * 40, net3res=list(base), net3he=[False] * 40)
    assert hw4_report.rate_decision(study, "net3bn").side == 1, "30 seeds only it learned in, none the other way"
    assert hw4_report.rate_decision(study, "net3he").side == -1
    same = study.tested["net3res"]
    assert same.adjusted == (None,), "no discordant seed: its test cannot reach alpha and stays out of the family"
    assert study.tested["net3bn"].family == 2
    assert hw4_report.rate_decision(study, "net3res").verdict is hw4_report.Verdict.NOT_RESOLVED
    # one discordant seed in four: p = 0.5 at best, never resolved
    close = synthetic(base, net3bn=[k < 11 for k in range(40)])
    assert hw4_report.rate_decision(close, "net3bn").side == 0


@pytest.fixture
def beside(tmp_path):
    """The committed runs' metrics.json files, side by side as in results/."""
    for name in (*FULL, "net3-rates"):
        shutil.copytree(RUNS / name, tmp_path / name, ignore=shutil.ignore_patterns("*.png", "*.pt", "*.pkl"))
    return tmp_path


def test_report_with_links_the_runs_and_remembers_them(beside, monkeypatch):
    rendered = skip_rendering(monkeypatch)
    rates, full = beside / "net3-rates", beside / "exercise-all"
    assert cli("report", rates, "--with", *FULL).returncode == 0
    text = (rates / "REPORT.md").read_text()
    assert "## The early call, checked" in text and "## Learn rates" in text
    assert {p.name for p in rendered} == {"rates.png"}, "a short run draws its rates, not its curves"
    summary = json.loads((rates / "metrics.json").read_text())
    assert summary["with"] == list(FULL) and summary["rates"]["matched"] == summary["rates"]["checked"]
    assert cli("report", rates).returncode == 0 and (rates / "REPORT.md").read_text() == text, "remembered"
    assert cli("report", full, "--with", "net3-rates").returncode == 0
    assert "Learn rates at " in (full / "REPORT.md").read_text() and "(`net3-rates`:" in (full / "REPORT.md").read_text()
    assert cli("report", full, "--with").returncode == 0, "--with alone forgets"
    assert "Learn rates at" not in (full / "REPORT.md").read_text()
    assert "with" not in json.loads((full / "metrics.json").read_text())


@pytest.mark.parametrize("linked", [["nowhere"], [".."], ["exercise/seed_5"]])
def test_report_with_a_run_that_is_not_beside_it_is_one_line(beside, linked):
    before = (beside / "net3-rates" / "REPORT.md").read_bytes()
    assert_one_line_exit_2(cli("report", beside / "net3-rates", "--with", *linked), "--with", linked[0])
    assert (beside / "net3-rates" / "REPORT.md").read_bytes() == before


def test_report_with_runs_of_the_same_length_is_one_line(beside):
    assert_one_line_exit_2(cli("report", beside / "exercise-all", "--with", "exercise"), "--with", "longer runs")


def test_a_remembered_run_that_is_gone_is_left_out_with_a_note(beside, monkeypatch):
    skip_rendering(monkeypatch)
    rates = beside / "net3-rates"
    assert cli("report", rates, "--with", *FULL).returncode == 0
    shutil.rmtree(beside / "exercise")
    ran = cli("report", rates)
    assert ran.returncode == 0 and "links 'exercise', which is no longer beside it" in ran.stdout
    assert json.loads((rates / "metrics.json").read_text())["with"] == ["exercise-all"]


@pytest.mark.parametrize("crafted", ["../../etc", ["a", 5], {"x": 1}])
def test_a_crafted_with_in_metrics_json_is_one_line_or_left_out(beside, monkeypatch, crafted):
    skip_rendering(monkeypatch)
    rates = beside / "net3-rates"
    blob = json.loads((rates / "metrics.json").read_text())
    linked = [crafted] if isinstance(crafted, str) else crafted
    (rates / "metrics.json").write_text(json.dumps({**blob, "with": linked}))
    ran = cli("report", rates)
    if isinstance(crafted, str):  # a name that is not a run beside it: left out, nothing read from there
        assert ran.returncode == 0 and "no longer beside it" in ran.stdout
    else:
        assert_one_line_exit_2(ran, "metrics.json", "is not a list of run names")


def test_deaths_that_fall_in_one_seed_are_found_and_tested_against_independent_deaths():
    """Four remedies dying in one seed of ten is rare if each dies independently; each dying in its own seed is
    not. The base's deaths are tested apart: remedies dying only where Net3 dies."""
    seeds = range(5, 15)
    remedies = ("net3bn", "net3res", "net3he", "net3xavier")
    together = {"net3": {s: s not in (7, 8) for s in seeds}, **{n: {s: s != 6 for s in seeds} for n in remedies}}
    c = hw4_report.co_deaths(together, "net3")
    assert c.shared_deaths == [(6, list(remedies))] and c.observed == (6, 0)
    assert c.p_values[0] < 0.01 and c.p_values[1] == 1.0
    apart = {"net3": {s: s not in (7, 8) for s in seeds},
             **{n: {s: s != 9 + k for s in seeds} for k, n in enumerate(remedies)}}
    c = hw4_report.co_deaths(apart, "net3")
    assert c.shared_deaths == [] and c.observed == (0, 0) and c.p_values[0] == 1.0
    where_net3_dies = {"net3": {s: s not in (7, 8) for s in seeds},
                       **{n: {s: s not in (7, 8) for s in seeds} for n in remedies[:2]}}
    c = hw4_report.co_deaths(where_net3_dies, "net3")
    assert c.observed == (2, 4) and c.p_values[1] < 0.05
    assert hw4_report.co_deaths({"net3": {5: True}, "net3bn": {5: True}}, "net3") is None, "nothing to test"


def test_zero_updates_pool_each_seed_once_over_every_run_that_recorded_them(short, full):
    """The pooled table of Q2's zero updates, recounted from the raw metrics.json files: a full-length run's
    seed before the short run's of the same seed, a seed in no two rows."""
    study = hw4_report.rate_study("net3-rates", short, full)
    for z in study.zero_updates():
        seen = {}
        for run in (*FULL, "net3-rates"):
            for path in sorted((RUNS / run).glob("seed_*/metrics.json")):
                entry = json.loads(path.read_text())["nets"].get(z.net)
                if entry and entry.get("update_sizes", {}).get("conv1"):
                    seen.setdefault(entry["config"]["train_seed"], (max(entry["epoch"]["train_class_acc"]) < 0.3,
                                                                   entry["update_sizes"]["conv1"][-1] <= 1e-12))
        stuck = [zero for at_chance, zero in seen.values() if at_chance]
        learned = [zero for at_chance, zero in seen.values() if not at_chance]
        assert (z.at_chance, z.zero_at_chance, z.learned, z.zero_learned) == (len(stuck), sum(stuck), len(learned),
                                                                              sum(learned)), z.net
    assert {z.net for z in study.zero_updates()} == set(short.nets) and study.update_runs[-1] == "net3-rates"


def test_each_remedy_names_the_failure_it_makes_rarer():
    """A remedy that learns more often makes the collapse rarer; it lessens the early vanishing gradient only
    where its early gradient ratio resolves above the base's, paired by seed after Holm."""
    base = [k < 10 for k in range(40)]
    study = dataclasses.replace(synthetic(base, net3bn=[True] * 40, net3xavier=[True] * 40), early={
        "net3": {k: -4.0 + 0.1 * (k % 3) for k in range(40)}, "net3bn": {k: -0.5 + 0.1 * (k % 5) for k in range(40)},
        "net3xavier": {k: -4.0 + 0.1 * (k % 3) + (0.1 if k % 2 else -0.1) for k in range(40)}})  # the same, mean
    assert hw4_report.decide(study.early_tested["net3bn"], unit=hw4_report.DECADES).side == 1
    assert study.early_tested["net3bn"].family == 2
    text = hw4_report.failures_text(study, ["net3bn", "net3xavier"])
    assert text.startswith("Net3-BN and Net3-Xavier make the collapse (ending at chance) rarer, and Net3-BN also "
                           "lessens the early vanishing gradient")
    assert text.endswith("; Net3-Xavier not resolved as lessening the early vanishing gradient (Net3-Xavier 1× "
                         "(Holm p = 1))")
