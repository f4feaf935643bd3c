"""The comparison report: accepted JSON shapes, merging, the rendered table and plots, the CLI."""
from __future__ import annotations

import html
import json
import logging

import pytest

from yolo_prune.cli import main
from yolo_prune.report import build_report, load_entries, make_entry
from yolo_prune.report.entries import entries_from_json

CHANNELS = {"model.0.conv": 32, "model.1.conv": 64, "model.2.conv": 64}


def _prune_report(tmp_path, weights="base.pt", out="base-pruned50.pt"):
    data = {"weights": str(tmp_path / weights), "out": str(tmp_path / out),
            "before": {"params_m": 6.0, "gmacs": 6.5, "file_mb": 12.0, "latency_ms": 20.0},
            "after": {"params_m": 2.0, "gmacs": 2.2, "file_mb": 4.0, "latency_ms": 10.0},
            "channels_before": CHANNELS, "channels_after": {k: v // 2 for k, v in CHANNELS.items()}}
    path = tmp_path / "prune.json"
    path.write_text(json.dumps(data))
    return path


def _eval_json(tmp_path, name, weights, map50_95, speed=None):
    path = tmp_path / name
    path.write_text(json.dumps({"weights": str(tmp_path / weights), "map50_95": map50_95, "map50": map50_95 + 0.2,
                                "speed_ms": speed or {"preprocess": 1.0, "inference": 8.0, "nms": 1.0}}))
    return path


def _table_rows(markdown: str) -> list[list[str]]:
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]  # skip header and rule


def test_prune_and_eval_json_merge_into_one_row_per_model(tmp_path):
    entries = load_entries([_prune_report(tmp_path), _eval_json(tmp_path, "e1.json", "base-pruned50.pt", 0.30),
                            _eval_json(tmp_path, "e0.json", "base.pt", 0.40)])
    assert [e["name"] for e in entries] == ["base", "base-pruned50"]
    base, pruned = entries
    assert (base["gmacs"], base["map50_95"], base["fps"]) == (6.5, 0.40, pytest.approx(50.0))
    assert (pruned["gmacs"], pruned["map50_95"]) == (2.2, 0.30)
    assert pruned["channels"]["model.1.conv"] == 32


def test_report_renders_the_expected_rows_and_plots(tmp_path):
    entries = [make_entry({"name": "yolov7-tiny", "params_m": 6.0, "gmacs": 6.6, "file_mb": 12.0, "map50_95": 0.4,
                           "map50": 0.6, "fps": 50.0, "channels": CHANNELS}),
               make_entry({"name": "uniform", "params_m": 2.0, "gmacs": 2.2, "map50_95": 0.3, "fps": 90.0,
                           "channels": {k: v // 2 for k, v in CHANNELS.items()}}),
               make_entry({"name": "allocated", "params_m": 2.1, "gmacs": 2.2, "map50_95": 0.33, "latency_ms": 10.0})]
    paths = build_report(entries, tmp_path / "report", title="Tiny comparison", notes=["Made by `yolo-prune run`."])
    markdown = paths["markdown"].read_text()
    rows = _table_rows(markdown)
    assert [r[0] for r in rows] == ["yolov7-tiny", "uniform", "allocated"]
    assert rows[1][3] == "3"  # MACs x against the first row: 6.6 / 2.2
    assert rows[2][-1] == "100"  # FPS derived from latency_ms
    assert rows[1][4] == "-"  # missing size shown as '-'
    assert {"map_vs_gmacs", "fps_vs_map", "channels"} <= set(paths)
    assert all(paths[k].stat().st_size > 1000 for k in ("map_vs_gmacs", "fps_vs_map", "channels"))
    assert "](plots/map_vs_gmacs.png)" in markdown
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 3 and "<td>allocated</td>" in page
    assert "<code>yolo-prune run</code>" in page and "Made by `yolo-prune run`." in markdown
    assert json.loads(paths["entries"].read_text())["models"][2]["fps"] == 100.0


def test_the_fps_plot_says_how_the_latencies_were_measured(tmp_path):
    from yolo_prune.report import write_report

    ab = "torch A/B, 2 threads: the interleaved medians, one per architecture"
    timed = [make_entry({"name": name, "gmacs": gmacs, "map50_95": 0.3, "latency_ms": ms, "timing": ab})
             for name, gmacs, ms in (("baseline", 2.0, 20.0), ("pruned", 1.0, 10.0))]
    alone = [make_entry({**e, "timing": None}) for e in timed]

    def caption(entries, out):
        page = build_report(entries, tmp_path / out)["markdown"].read_text()
        return next(line for line in page.splitlines() if line.startswith("## FPS vs mAP50-95"))

    assert caption(timed, "ab") == f"## FPS vs mAP50-95 (batch 1, {ab})"
    assert caption(alone, "alone") == "## FPS vs mAP50-95 (batch 1, each model timed alone, so noisy)"
    assert "timed in different ways" in caption([timed[0], alone[1]], "mixed")
    report_json = tmp_path / "report.json"  # a main job's report, read back by `yolo-prune report`
    report_json.write_text(json.dumps({"models": timed, "latency_source": ab}))
    page = write_report([report_json], tmp_path / "again")["markdown"].read_text()
    assert f"## FPS vs mAP50-95 (batch 1, {ab})" in page


def test_plots_without_data_are_left_out(tmp_path):
    paths = build_report([make_entry({"name": "a", "params_m": 1.0, "gmacs": 1.0})], tmp_path)
    assert not {"map_vs_gmacs", "fps_vs_map", "channels"} & set(paths)
    assert "![" not in paths["markdown"].read_text()


def test_models_list_and_iterative_json(tmp_path):
    models = tmp_path / "main.json"
    models.write_text(json.dumps({"models": [{"name": "a", "gmacs": 2.0, "device": "cpu"},
                                             {"name": "b", "mAP50-95": 0.2}]}))
    assert [(e["name"], e["gmacs"], e["map50_95"]) for e in entries_from_json(models)] == [("a", 2.0, None),
                                                                                         ("b", None, 0.2)]
    steps = tmp_path / "iterative.json"
    steps.write_text(json.dumps({"settings": {"metric": "map50"}, "steps": [
        {"step": 0, "gmacs": 4.0, "params_m": 2.0, "score": 0.5}, {"step": 1, "gmacs": 2.0, "params_m": 1.0,
                                                                   "score": 0.4}]}))
    rows = entries_from_json(steps)
    assert [(e["name"], e["map50"]) for e in rows] == [("iterative step 0", 0.5), ("iterative step 1", 0.4)]


def test_the_eval_cli_report_is_understood(tmp_path):
    path = tmp_path / "tiny-eval.json"
    path.write_text(json.dumps({"weights": str(tmp_path / "tiny.pt"), "img_size": 640,
                                "metrics": {"map50_95": 0.25, "map50": 0.4, "speed_ms": {"inference": 5.0}},
                                "model": {"params_m": 6.0, "gmacs": 6.6},
                                "latency": {"latency_ms_median": 4.0, "fps": 250.0, "device": "cpu"}}))
    (entry,) = entries_from_json(path)
    assert (entry["name"], entry["map50_95"], entry["gmacs"], entry["latency_ms"], entry["fps"]) == \
        ("tiny", 0.25, 6.6, 4.0, 250.0)


def test_a_bare_prune_summary_is_understood(tmp_path):
    summary = tmp_path / "pruned.json"
    summary.write_text(json.dumps({"params_m_before": 6.0, "params_m_after": 2.0, "gmacs_before": 6.6,
                                   "gmacs_after": 2.2, "channels_before": CHANNELS, "channels_after": CHANNELS}))
    original, pruned = entries_from_json(summary)
    assert (original["gmacs"], pruned["gmacs"], pruned["params_m"]) == (6.6, 2.2, 2.0)
    assert original["name"] != pruned["name"]


def test_unknown_inputs_are_refused_with_the_accepted_shapes(tmp_path):
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="'models' list"):
        entries_from_json(odd)
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"models": [{"name": "a", "gmac": 1.0}]}))
    with pytest.raises(ValueError, match="Did you mean 'gmacs'"):
        entries_from_json(typo)
    with pytest.raises(ValueError, match="nothing to report"):
        build_report([], tmp_path / "empty")


def test_folders_skip_other_json_files(tmp_path, caplog):
    runs = tmp_path / "runs"
    runs.mkdir()
    _prune_report(runs)
    (runs / "hyp.json").write_text(json.dumps({"lr0": 0.01}))
    with caplog.at_level(logging.INFO, logger="yolo_prune"):  # the library logs; it never prints
        assert len(load_entries([runs])) == 2
    assert "skipped" in caplog.text


def test_cli_writes_the_page_and_refuses_to_overwrite(tmp_path):
    src = _prune_report(tmp_path)
    out = tmp_path / "page"
    assert main(["report", str(src), "--out", str(out), "--title", "CLI"]) == 0
    assert "# CLI" in (out / "report.md").read_text()
    assert main(["report", str(src), "--out", str(out)]) == 2  # exists, no --force
    assert main(["report", str(src), "--out", str(out), "--force"]) == 0


def test_the_report_page_shows_the_full_command(tmp_path):
    from yolo_prune.cli import main

    runs = tmp_path / "runs"
    runs.mkdir()
    _prune_report(runs)
    out = tmp_path / "page"
    assert main(["report", str(runs), "--out", str(out), "--title", "two words"]) == 0
    command = f"yolo-prune report {runs} --out {out} --title 'two words'"
    assert command in (out / "report.md").read_text()
    assert html.escape(command) in (out / "report.html").read_text()


def test_close_points_get_their_labels_apart_each_beside_its_own_marker():
    from yolo_prune.report.plots import _label_offsets, pyplot

    fig, ax = pyplot().subplots(figsize=(6, 4.2))
    points = [(0.41, 0.778, "baseline"), (0.13, 0.29, "pruned"), (0.41, 0.787, "control")]
    for px, py, _ in points:
        ax.scatter(px, py)
    offsets = _label_offsets(ax, points)
    pyplot().close(fig)
    assert offsets == [(5, -11), (5, 4), (5, 4)]  # the lower of the two close ones below, the rest above
