"""CONTRIBUTING's "Extending hw4", held by tests: a new NetSpec field with a default keeps every committed
fingerprint; a new per-sample metric is recorded by a fresh run, and report and --resume still work on runs
made without it; a claim in nats is written and drawn in nats; the metrics.json format follows Results; the
parameter bound for untrusted weights counts every spec field like the net does."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import hw4_records
import hw4_report
from conftest import REFERENCE_NETS, ROOT, TOP2, cli, hw4, patch_everywhere, reference_args, skip_rendering

COMMITTED = [ROOT / "results" / "exercise", ROOT / "results" / "exercise-all"]
TRAINED = [*COMMITTED, ROOT / "results" / "net3-rates"]  # and the short runs of the learn rates


def with_new_field(default: str = "max", value: str | None = None) -> dict[str, hw4.NetSpec]:
    """The net table as it would be after adding a field `pool: str = default` to NetSpec (each spec set to
    `value` when given)."""
    wider = dataclasses.make_dataclass("WiderSpec", [("pool", str, default)], bases=(hw4.NetSpec,), frozen=True)
    return {name: wider(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(hw4.NetSpec)},
                        **({"pool": value} if value else {})) for name, spec in hw4.NETS.items()}


def committed_entries():
    for run in TRAINED:
        for path in sorted(run.glob("seed_*/metrics.json")):
            for name, entry in json.loads(path.read_text())["nets"].items():
                yield path, name, entry


def fingerprint_of(name: str, entry: dict) -> str:
    """The run fingerprint the current code computes for a committed net entry."""
    conf = entry["config"]
    settings = {k: conf[k] for k in hw4.Config().train_settings()}
    cfg = types.SimpleNamespace(train_settings=lambda: settings)
    return hw4.run_fingerprint(cfg, {"content": conf["dataset"]}, name, torch.device("cpu"))


# Rows of NETS changed on purpose since a committed run trained them: their committed entries must no longer match,
# so that --resume retrains them. A net leaves this set once every committed run holds it retrained (net3xavier
# left it when exercise-all was retrained with Xavier on every layer, issue faithful-remedies).
RESPECIFIED: set[str] = set()


def test_a_new_spec_field_at_its_default_keeps_every_committed_fingerprint(monkeypatch):
    entries = list(committed_entries())
    assert len(entries) > 50
    for path, name, entry in entries:
        stale = hw4.Results.from_json(entry)
        stale = hw4.spec_changed(stale)
        assert stale == (fingerprint_of(name, entry) != entry["fingerprint"]), f"{path}: {name}: spec_changed"
        assert stale == (name in RESPECIFIED), f"{path}: {name}"
    entries = [(path, name, entry) for path, name, entry in entries if name not in RESPECIFIED]
    monkeypatch.setattr(hw4, "NETS", with_new_field())
    for path, name, entry in entries:
        assert fingerprint_of(name, entry) == entry["fingerprint"], f"{path}: {name} after adding a field"
    monkeypatch.setattr(hw4, "NETS", with_new_field(value="avg"))
    path, name, entry = entries[0]
    assert fingerprint_of(name, entry) != entry["fingerprint"], "a field off its default changes the numbers"


def test_a_new_metric_is_recorded_by_a_fresh_run(tiny_built, tmp_path, monkeypatch, with_top2):
    skip_rendering(monkeypatch)
    out = tmp_path / "fresh"
    args = reference_args(tiny_built, out)
    nets = args.index("--nets") + 1
    ran = cli(*args[:nets], "net1", *args[nets + len(REFERENCE_NETS):], "--epochs", "1")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    entry = json.loads((out / "metrics.json").read_text())["nets"]["net1"]
    for key in ("train_top2_acc", "val_top2_acc"):
        assert len(entry["epoch"][key]) == 1 and 0 <= entry["epoch"][key][0] <= 1
        assert entry["epoch"][key][0] >= entry["epoch"][key.replace("top2", "class")][0], "top-2 >= top-1"
    assert "train_clean_top2_acc" in entry["train_clean"]
    assert "final val top2" in (out / "REPORT.md").read_text()


@pytest.mark.parametrize("run", COMMITTED, ids=lambda p: p.name)
def test_a_committed_run_made_before_a_new_metric_reports_as_it_did(run, tmp_path, monkeypatch, with_top2):
    """A metric no net of the run recorded gets no column: the committed report is rewritten byte for byte."""
    for name in ("exercise", "exercise-all", "net3-rates"):  # the runs it links sit beside it, as in results/
        shutil.copytree(run.parent / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("*.png", "*.pt", "*.pkl", "checkpoints"))
    skip_rendering(monkeypatch)
    ran = cli("report", tmp_path / run.name)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (tmp_path / run.name / "REPORT.md").read_text() == (run / "REPORT.md").read_text()


def with_top2_series(r: hw4.Results) -> hw4.Results:
    """r as if it had recorded TOP2: its accuracy series under TOP2's keys."""
    epoch = {**r.epoch, **{k.replace("class_acc", "top2_acc"): v for k, v in r.epoch.items() if "class_acc" in k}}
    return dataclasses.replace(r, epoch=epoch)


def test_a_metric_some_nets_recorded_is_shown_not_recorded_for_the_others(with_top2):
    _, runs_by_seed, _ = hw4_records.load_finished_run(COMMITTED[0])
    runs = {"net1": [with_top2_series(s["net1"]) for s in runs_by_seed[:2]],
            "net2": [s["net2"] for s in runs_by_seed[:2]]}
    assert hw4_records.shown_metrics(runs)[-1] is TOP2
    table = hw4_report.report_table(hw4_report.Experiment(runs, None))
    header = next(line for line in table if line.startswith("| net |"))
    rows = {line.split(" | ")[0]: line for line in table if line.startswith("| Net")}
    assert "final val top2" in header and "| not recorded |" not in rows["| Net1"]
    assert rows["| Net2"].count("| not recorded |") == 1, "final val top2 of Net2 (the table's train is eval mode's)"
    fig = hw4.draw_curves_epoch(runs, None)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("not recorded for some nets") == 1 and len(fig.axes[2].lines) == 2, "Net1's top-2 drawn"
    alone = hw4.draw_curves_epoch({"net2": runs["net2"]}, None)
    assert len(alone.axes) == 2, "a metric no net recorded gets no panel"


def test_resume_over_a_finished_run_trains_nothing_after_a_field_or_a_metric_is_added(tiny_built, reference,
                                                                                      tmp_path, monkeypatch):
    skip_rendering(monkeypatch)
    for step, patch in (("field", ("NETS", with_new_field())), ("metric", ("METRICS", (*hw4.METRICS, TOP2)))):
        out = tmp_path / step
        shutil.copytree(reference, out, ignore=shutil.ignore_patterns("checkpoints"))
        with monkeypatch.context() as m:
            patch_everywhere(m, *patch)
            ran = cli(*reference_args(tiny_built, out), "--resume")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert not re.search(r"epoch +\d+/2", ran.stdout), f"after adding a {step}, --resume trained:\n{ran.stdout}"
        notes = [line for line in ran.stdout.splitlines() if "did not record" in line]
        assert len(notes) == (len(REFERENCE_NETS) if step == "metric" else 0), ran.stdout
        if step == "metric":
            assert "train_top2_acc, val_top2_acc" in notes[0] and "as not recorded" in notes[0]


def nats_claim() -> hw4_report.Claim:
    return hw4_report.Claim("Q2", "Net3 ends with a higher train loss than Net1.",
                     hw4_report.check_differences([("net1", "net3")], hw4_records.FINAL_TRAIN_LOSS), ("net1", "net3"))


def test_a_claim_in_nats_is_written_in_nats_and_drawn_on_its_own_panel(monkeypatch):
    _, runs_by_seed, facts = hw4_records.load_finished_run(COMMITTED[0])
    exp = hw4_report.Experiment({name: [runs[name] for runs in runs_by_seed] for name in runs_by_seed[0]}, facts)
    added = nats_claim()
    monkeypatch.setattr(hw4_report, "CLAIMS", (*hw4_report.CLAIMS, added))
    result = hw4_report.claim_row(exp, added)
    assert result.measured.startswith("final train cross-entropy: Net3 − Net1: regimes as in claim 4; over the 8 seeds ")
    assert " nats (95% CI [" in result.measured and "points" not in result.measured
    assert result.intervals[0].unit is hw4_records.NATS
    fig = hw4_report.draw_claims(exp)
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert "accuracy points" in labels[0] and labels[-1].startswith("difference in nats")
    assert sum(label.startswith("difference in nats") for label in labels) == 1
    drawn = [x for line in fig.axes[-1].lines for x in line.get_xdata()]
    diffs = result.intervals[0].cmp.diffs  # Net3 has two regimes: each seed's difference is drawn
    assert min(drawn) <= min(diffs) and max(diffs) <= max(drawn) and max(drawn) < 5, "nats drawn unscaled"


# Results' fields at the one format of metrics.json that hw4 reads; changing Results without bumping METRICS_FORMAT
# fails here.
RESULTS_FIELDS = {5: ("net", "label", "classes", "config", "steps100", "epoch", "train_clean", "train_confusion",
                      "val_confusion", "best_epoch", "grad_norms", "grad_norms_steps100", "dead_units",
                      "fc1_in_features", "params", "n_train", "n_val", "hardest", "train_time_s", "infrastructure",
                      "fingerprint", "val_predictions", "update_sizes", "update_sizes_steps100", "spec")}


def test_a_run_reports_from_its_recorded_specs_whatever_the_table_holds_today(tmp_path, monkeypatch):
    """The report names and pairs a run's nets by the specs the run recorded: with Net2's row gone from today's
    table, and Net3's relabelled, exercise's report is the committed one but for the new label, which it does
    not show (Net3 reads as it trained)."""
    shutil.copytree(ROOT / "results" / "exercise", tmp_path / "exercise",
                    ignore=shutil.ignore_patterns("*.png", "*.pt", "*.pkl", "checkpoints"))
    (tmp_path / "exercise" / "metrics.json").unlink()  # the summary links net3-rates, which is not copied
    today = {n: s for n, s in hw4.NETS.items() if n != "net2"}
    today["net3"] = dataclasses.replace(today["net3"], label="Net3-renamed")
    monkeypatch.setattr(hw4_report, "_handed", [dataclasses.replace(hw4.exercise(), nets=today)])
    skip_rendering(monkeypatch)
    hw4_report.report_main([str(tmp_path / "exercise")])
    written = (tmp_path / "exercise" / "REPORT.md").read_text()
    assert "Net3-renamed" not in written, [l for l in written.splitlines() if "renamed" in l]
    assert "| Net2 | 20 of 20 | 61." in written and "| Net3 | 8 of 20 (19–64%) | 57." in written
    entry = json.loads((ROOT / "results" / "exercise" / "seed_5" / "metrics.json").read_text())["nets"]["net2"]
    for field, bad in (("padding", -1), ("pickle_name", "../results1.pkl"), ("colour", "red")):
        spec = {**entry["spec"], field: bad}
        with pytest.raises(hw4_records.SchemaError, match=r"nets\.net2\.spec"):
            hw4_records.check_results_entry("net2", {**entry, "spec": spec})


def test_the_metrics_format_is_what_results_writes(reference):
    assert tuple(f.name for f in dataclasses.fields(hw4.Results)) == RESULTS_FIELDS[hw4.METRICS_FORMAT]
    written = json.loads((reference / "metrics.json").read_text())
    assert written["format"] == hw4.METRICS_FORMAT
    assert all(tuple(entry) == RESULTS_FIELDS[hw4.METRICS_FORMAT] for entry in written["nets"].values())
    for path, _, _ in committed_entries():
        assert hw4.read_metrics_json(path)["format"] == hw4.METRICS_FORMAT


SPEC_VALUES = {"padding": (0, 1, 2), "channels": ((16, 32), (8, 12)), "extra_convs": (0, 1, 3),
               "block": hw4.CHAIN_BLOCKS, "init": hw4.INITS, "hidden": ((64,), (32, 16), (7, 5, 3)),
               "dropout": (0.0, 0.5), "augment": (False, True), "train_fraction": (1.0, 0.5),
               "noise_std": (0.0, 0.1), "input_scale": (1.0, 0.75, 0.5)}


def test_the_parameter_bound_counts_every_spec_field_like_the_net():
    assert set(SPEC_VALUES) == set(hw4.NetSpec("x").trained()), "a new spec field needs its values here"
    for field, values in SPEC_VALUES.items():
        for value, size, classes in itertools.product(values, (16, 33, 64), (2, 5)):
            spec = hw4.NetSpec("x", **{"extra_convs": 2, field: value})
            names = [f"c{k}" for k in range(classes)]
            counted = hw4.spec_parameter_count(spec, size, classes)
            assert counted == hw4.count_parameters(hw4.HW4Net("x", spec, size, names)), (field, value, size)


def rendered_texts(fig) -> list[str]:
    """Every text a rendered figure shows: titles, axis labels, legends and the tick labels, which exist only
    once the figure is drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    FigureCanvasAgg(fig).draw()
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def test_every_figure_prints_plain_text_labels():
    """With mathtext off (new_figure), a formatter that writes '$...$' prints it raw: no label may hold one."""
    _, runs_by_seed, facts = hw4_records.load_finished_run(COMMITTED[0])
    runs = {name: [runs[name] for runs in runs_by_seed] for name in runs_by_seed[0]}
    figures = [plot.draw(runs, None) for plot in hw4.FIGURES if not plot.per_net and not plot.needs_pictures]
    figures += [plot.draw(runs["net3"][0], None) for plot in hw4.FIGURES if plot.per_net and not plot.needs_pictures]
    figures.append(hw4_report.draw_claims(hw4_report.Experiment(runs, facts)))
    for fig in figures:
        texts = rendered_texts(fig)
        assert len(texts) > 10
        assert not [t for t in texts if "$" in t or "\\mathdefault" in t], fig._suptitle.get_text()


def committed_rerun_commands() -> dict[Path, list[str]]:
    """results/README.md's training command of each committed run (the one whose --out is that run)."""
    from test_readme import after_script, documented_commands
    commands = {}
    for command in documented_commands():
        argv = list(after_script(command))
        if "--out" in argv and argv[:1] != ["report"]:
            out = ROOT / argv[argv.index("--out") + 1]
            if out in TRAINED:
                commands[out] = [a for a in argv if a != "--resume"] + ["--resume"]
    return commands


def still_to_train(run: Path, argv: list[str]) -> set[tuple[int, str]]:
    """The (seed, net) pairs that the command, with --resume over the committed run, would train: those without a
    finished entry under the fingerprint the current code computes (the committed pictures' digest stands in for a
    fresh build of them, which gives the same digest)."""
    cfg = hw4.config_from_args(hw4.build_parser().parse_args(argv))
    entry = next(iter(json.loads(next(run.glob("seed_*/metrics.json")).read_text())["nets"].values()))
    digest = entry["config"]["dataset"]
    pending = set()
    for c in hw4.seed_configs(dataclasses.replace(cfg, out=str(run))):
        for name in cfg.nets:
            with contextlib.redirect_stdout(io.StringIO()):
                if hw4.finished_results(c, name, {"content": digest}, torch.device("cpu")) is None:
                    pending.add((c.training_seed, name))
    return pending


def test_a_new_row_leaves_the_committed_runs_documented_commands_as_they_were(monkeypatch):
    """No committed run's documented command trains anything, also after a row is added to NETS."""
    commands = committed_rerun_commands()
    assert set(commands) == set(TRAINED)
    before = {run: still_to_train(run, argv) for run, argv in commands.items()}
    assert before == {run: set() for run in TRAINED}, "every committed run is complete"
    monkeypatch.setitem(hw4.NETS, "net1wide", hw4.NetSpec("Net1-wide", channels=(32, 64), base="net1"))
    assert {run: still_to_train(run, argv) for run, argv in commands.items()} == before
    assert hw4.max_predict_params(5) == hw4.PREDICT_MAX_PARAMS




def test_no_row_of_the_table_nor_a_wider_one_is_beyond_what_predict_reads():
    """CONTRIBUTING's example row, twice Net1's channels, fits under predict's bounds as every row does."""
    rows = [*hw4.NETS.values(), hw4.NetSpec("Net1-wide", channels=(32, 64), base="net1")]
    for classes in (2, 5, 1000):
        bound = hw4.max_predict_params(classes)
        assert all(hw4.spec_parameter_count(s, hw4.MAX_IMAGE_SIZE, classes) <= bound for s in rows)
    assert all(hw4.activation_bytes(s, hw4.MAX_IMAGE_SIZE) <= hw4.PREDICT_MAX_ACTIVATION for s in rows)


def test_contributings_net_table_is_the_table():
    """CONTRIBUTING's net table names every row of NETS once, with its label and base, in the table's order."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \| [^|]+ \| (?:`(\w+)`)? ?\|", text, re.M)
    assert [name for name, _, _ in rows] == list(hw4.NETS)
    for name, label, base in rows:
        assert label.strip() == hw4.NETS[name].label and (base or None) == hw4.NETS[name].base, name


def test_a_scratch_copy_with_a_new_row_and_a_new_metric_reports_a_committed_run(tmp_path):
    """CONTRIBUTING's two one-edit promises made in the source itself, as a contributor makes them: a NETS row in
    hw4.py and a Metric in hw4_records.py. The report of a committed run then reads as before, without the new
    metric, and the row is in `--nets`' choices."""
    scratch = tmp_path / "hw4"
    scratch.mkdir()
    for name in ("hw4.py", "hw4_records.py", "hw4_sources.py", "hw4_report.py", "hw4_compare.py"):
        shutil.copy(ROOT / name, scratch / name)
    source = (scratch / "hw4.py").read_text()
    table_end = source.index("\n}\n", source.index("\nNETS: dict[str, NetSpec] = {"))
    (scratch / "hw4.py").write_text(source[:table_end] + '\n    "net1wide": NetSpec("Net1-wide", channels=(32, 64), '
                                    'base="net1"),' + source[table_end:])
    records = (scratch / "hw4_records.py").read_text()
    table = re.search(r"^METRICS = \((.*)\)$", records, re.M)  # the table as it stands, whatever it holds
    assert table and records.count("\nMETRICS = (") == 1
    (scratch / "hw4_records.py").write_text(records[:table.start()] + f'''
def per_sample_top2(logits, labels):
    return (logits.topk(2, dim=1).indices == labels[:, None]).any(1).double()


TOP2 = Metric("top2_acc", "top2", "top-2 accuracy", per_sample_top2, "top-2 accuracy", POINTS, percent=True)
METRICS = ({table.group(1)}, TOP2)''' + records[table.end():])
    run = tmp_path / "run"
    for seed in (5, 6):
        (run / f"seed_{seed}").mkdir(parents=True)
        shutil.copy(COMMITTED[0] / f"seed_{seed}" / "metrics.json", run / f"seed_{seed}" / "metrics.json")
    hw4_script = [sys.executable, str(scratch / "hw4.py")]
    ran = subprocess.run([*hw4_script, "report", str(run)], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and not ran.stderr, ran.stdout + ran.stderr
    report = (run / "REPORT.md").read_text()
    assert "top2" not in report and "| final val acc |" in report, "a metric no net recorded gets no column"
    ran = subprocess.run([*hw4_script, "--nets", "net1wide", "--help"], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and "net1wide" in ran.stdout
