"""Fault injection: hostile files, concurrent runs, failed starts, bad data, full disks, signals, bad JSON.

Every case goes through the command line (``yolo_prune.cli.main``) as a user would and checks the
four promises of issue 11: no code from a file runs, no data is lost, nothing is silently wrong
(a clear error, or a counted warning naming what was skipped), and the user sees one line, never
a traceback.
"""
from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT, build_yolov7

from yolo_prune.adapters import get_adapter
from yolo_prune.cli import main
from yolo_prune.data import load_data_config
from yolo_prune.engine import checkpointing
from yolo_prune.engine.finetune import default_hyp_path
from yolo_prune.engine.hyp import load_hyp
from yolo_prune.engine.settings import TrainSettings
from yolo_prune.io.lock import LOCK_NAME, run_lock
from yolo_prune.pruning import conv_out_channels, prune_model

IMG = 64
TRAIN_FLAGS = ["--epochs", "1", "--img", str(IMG), "--batch", "2", "--nominal-batch", "2", "--workers", "0",
               "--device", "cpu", "--no-val"]


class RunsShell:
    """Unpickles as a call of ``os.system``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def data_yaml(tmp_path_factory) -> Path:
    """4 train / 2 val synthetic images of 64 px."""
    from yolo_prune.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=4, n_val=2, img_size=IMG, seed=0)


@pytest.fixture(scope="module")
def weights(tmp_path_factory, data_yaml) -> Path:
    """A yolov7-tiny checkpoint (width 0.125) with the data's classes."""
    adapter = get_adapter("yolov7")
    names = load_data_config(data_yaml).names
    loaded = adapter.build("yolov7-tiny", nc=len(names), width_multiple=0.125)
    loaded.names = list(names)
    return adapter.save(loaded, tmp_path_factory.mktemp("weights") / "tiny.pt")


@pytest.fixture()
def evil(tmp_path) -> tuple[Path, Path]:
    """``(checkpoint, marker)``: a YOLOv7-looking checkpoint that touches ``marker`` when unpickled in full."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": build_yolov7(width=0.125), "epoch": -1, "payload": RunsShell(marker)}, path)
    return path, marker


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of one quiet command; stderr must be one line without a traceback."""
    code = main(["-q", *argv])
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) <= 1, err
    return code, err


def fake_last_pt(run: Path, weights: Path, data_yaml: Path, **job: object) -> Path:
    """A clean, resumable ``weights/last.pt`` (epoch 0 of 3) whose run state says ``job``."""
    adapter = get_adapter("yolov7")
    loaded = adapter.load(weights)
    settings = TrainSettings(epochs=3, img_size=IMG, batch_size=2, nominal_batch=2, device="cpu", workers=0, val=False)
    state = {"job": {"weights": str(weights), "cfg": None, "trust": False, "data": str(data_yaml), "hyp": None,
                     "teacher": None, "family": "yolov7", "names": loaded.names, "out_dir": str(run), **job},
             "settings": settings.to_dict(), "hyp": load_hyp(default_hyp_path()), "best_fitness": None, "scaler": None}
    optimizer = torch.optim.SGD(loaded.model.parameters(), lr=0.01)
    return checkpointing.save_last(run / "weights" / "last.pt", adapter=adapter, model=loaded.model,
                                   names=loaded.names, epoch=0, best_fitness=None, results_text="", ema=None,
                                   optimizer=optimizer, train_state=state)


# -- 1. trust never widens -----------------------------------------------------------------------
@pytest.mark.parametrize("path", ["prune --weights", "eval --weights", "finetune --weights", "finetune --teacher",
                                  "finetune --resume", "prune --recipe", "report"])
def test_a_malicious_pickle_never_runs_on_any_loading_path(path, evil, weights, data_yaml, tmp_path, capsys):
    bad, marker = evil
    argv = {
        "prune --weights": ["prune", "--weights", str(bad), "--img", str(IMG), "--no-latency"],
        "eval --weights": ["eval", "--weights", str(bad), "--data", str(data_yaml), "--img", str(IMG)],
        "finetune --weights": ["finetune", "--weights", str(bad), "--data", str(data_yaml), *TRAIN_FLAGS],
        "finetune --teacher": ["finetune", "--weights", str(weights), "--teacher", str(bad), "--data",
                               str(data_yaml), *TRAIN_FLAGS],
        "finetune --resume": ["finetune", "--resume", str(bad)],
        "prune --recipe": ["prune", "--weights", str(weights), "--recipe", str(bad), "--img", str(IMG)],
        "report": ["report", str(bad), "--out", str(tmp_path / "report")],
    }[path]
    code, err = run_cli([*argv, "--out", str(tmp_path / "out")] if "--out" not in argv else argv, capsys)
    assert code == 2 and err.startswith("yolo-prune ") and str(bad.name) in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "report").exists()


@pytest.mark.parametrize("trust_flag", [[], ["--trust-checkpoint"]])
def test_resume_never_takes_trust_or_the_teacher_from_the_run_state(trust_flag, evil, weights, data_yaml, tmp_path,
                                                                   capsys):
    bad, marker = evil
    run = tmp_path / "run"
    fake_last_pt(run, weights, data_yaml, trust=True, teacher=str(bad))  # a tampered run state
    code, err = run_cli(["finetune", "--resume", str(run), *trust_flag], capsys)
    assert code == 2 and not marker.exists()
    assert "never taken from a run's files" in err and f"--teacher {bad}" in err


@pytest.mark.parametrize("kind", ["recipe", "data"])
def test_yaml_files_cannot_construct_python_objects(kind, weights, tmp_path, capsys):
    marker = tmp_path / "pwned"
    bad = tmp_path / f"{kind}.yaml"
    bad.write_text(f"pruning_ratio: !!python/object/apply:os.system ['touch {marker}']\n")
    argv = (["prune", "--recipe", str(bad), "--no-latency", "--out", str(tmp_path / "p.pt")] if kind == "recipe"
            else ["eval", "--data", str(bad)])
    code, err = run_cli([*argv, "--weights", str(weights), "--img", str(IMG)], capsys)
    assert code == 2 and str(bad) in err and not marker.exists()


# -- 2. one writer per run folder ----------------------------------------------------------------
def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_stale(weights, data_yaml, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(run / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, f'pid {os.getpid()}'.encode())\n"
         "print('locked', flush=True)\ntime.sleep(60)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = run_cli(["finetune", "--weights", str(weights), "--data", str(data_yaml), "--out", str(run),
                             *TRAIN_FLAGS], capsys)
        assert code == 2 and f"in use by another run (pid {holder.pid})" in err
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run):  # the holder died: its lock file is stale, not a lock
        assert str(os.getpid()) in (run / LOCK_NAME).read_text()


# -- 3. failed starts leave nothing that blocks a retry -------------------------------------------
def test_a_failed_start_can_be_retried_without_exist_ok(weights, data_yaml, tmp_path, capsys):
    run = tmp_path / "run"
    empty = tmp_path / "empty.json"
    coco = json.loads((data_yaml.parent / "annotations" / "instances_train.json").read_text())
    empty.write_text(json.dumps({**coco, "annotations": []}))
    bad_data = tmp_path / "data.yaml"
    bad_data.write_text(yaml.safe_dump({**yaml.safe_load(data_yaml.read_text()), "path": str(data_yaml.parent),
                                        "train_ann": str(empty)}))
    code, err = run_cli(["finetune", "--weights", str(weights), "--data", str(bad_data), "--out", str(run),
                         *TRAIN_FLAGS], capsys)
    assert code == 2 and "no annotations" in err
    assert not (run / "args.yaml").exists()
    (run / "args.yaml").write_text("left: by an older version\n")  # a leftover of a start that failed
    assert main(["-q", "finetune", "--weights", str(weights), "--data", str(data_yaml), "--out", str(run),
                 *TRAIN_FLAGS]) == 0
    capsys.readouterr()  # the training bar
    assert (run / "weights" / "last.pt").is_file()
    code, err = run_cli(["finetune", "--weights", str(weights), "--data", str(data_yaml), "--out", str(run),
                         *TRAIN_FLAGS], capsys)
    assert code == 2 and "--resume" in err  # a run with weights is never overwritten silently


# -- 4. honest pruning ratios --------------------------------------------------------------------
def test_macs_fall_monotonically_with_the_ratio_and_a_held_ratio_says_what_it_achieved(caplog):
    adapter = get_adapter("yolov7")
    macs, warnings = [], []
    for ratio in (0.3, 0.5, 0.7, 0.9, 0.99):
        model = build_yolov7("yolov7-tiny", width=1.0, nc=3)
        before = conv_out_channels(model)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="yolo_prune"):
            result = prune_model(model, adapter, img_size=IMG, pruning_ratio=ratio)
        macs.append(result.macs_after)
        warnings.append(caplog.text)
        assert all(c >= min(4, before[name]) for name, c in result.channels_after.items())  # the minimum width
    assert all(a > b for a, b in zip(macs, macs[1:], strict=False)), macs  # 0.99 used to remove less than 0.5
    assert "could not be honoured" not in warnings[0]
    assert "held at the minimum width" in warnings[-1] and "fewer MACs" in warnings[-1]
    assert result.widths["held_at_minimum"] and not result.widths["left_whole"]
    assert result.widths["channel_reduction"] > 0.9


def test_the_prune_command_honours_min_channels_and_warns_with_the_achieved_reduction(weights, tmp_path, capsys):
    out = tmp_path / "p.pt"
    assert main(["-q", "prune", "--weights", str(weights), "--img", str(IMG), "--ratio", "0.9", "--min-channels",
                 "8", "--out", str(out), "--no-latency"]) == 0
    err = capsys.readouterr().err
    assert "could not be honoured" in err and "min_channels=8" in err
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["widths"]["held_at_minimum"] and min(report["channels_after"].values()) >= 8


# -- 5. data checks ------------------------------------------------------------------------------
def copy_data(data_yaml: Path, tmp_path: Path) -> tuple[Path, Path, dict]:
    """A private copy of the dataset: ``(data.yaml, val json, parsed val json)``."""
    root = Path(shutil.copytree(data_yaml.parent, tmp_path / "data"))
    ann = root / "annotations" / "instances_val.json"
    return root / "data.yaml", ann, json.loads(ann.read_text())


def test_corrupt_and_truncated_images_are_named_counted_and_skipped(weights, data_yaml, tmp_path, capsys):
    data, ann, coco = copy_data(data_yaml, tmp_path)
    first, second = (data.parent / "images" / "val" / img["file_name"] for img in coco["images"])
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # a truncated JPEG
    out = tmp_path / "eval.json"
    argv = ["-q", "eval", "--weights", str(weights), "--data", str(data), "--img", str(IMG), "--bench-runs", "0",
            "--out", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "skipped 1 of 2 images" in err and f"{first.name}: truncated JPEG" in err
    assert json.loads(out.read_text())["metrics"]["n_images"] == 1
    second.write_bytes(b"not an image at all")
    code, err = main(argv), capsys.readouterr().err  # a warning for the two images, then the error
    assert code == 2 and "no usable images" in err.splitlines()[-1] and "Traceback" not in err


@pytest.mark.parametrize("file_name", ["../escape.jpg", "/etc/hostname", "sub/../../escape.jpg"])
def test_file_names_leaving_the_image_folder_are_refused(file_name, weights, data_yaml, tmp_path, capsys):
    data, ann, coco = copy_data(data_yaml, tmp_path)
    coco["images"][0]["file_name"] = file_name
    ann.write_text(json.dumps(coco))
    code, err = run_cli(["eval", "--weights", str(weights), "--data", str(data), "--img", str(IMG)], capsys)
    assert code == 2 and "leaves the image folder" in err and repr(file_name) in err


@pytest.mark.parametrize("case", ["no annotations", "no images"])
def test_an_empty_split_or_ground_truth_is_an_error_not_a_score_of_minus_one(case, weights, data_yaml, tmp_path,
                                                                            capsys):
    data, ann, coco = copy_data(data_yaml, tmp_path)
    coco.update(annotations=[]) if case == "no annotations" else coco.update(images=[], annotations=[])
    ann.write_text(json.dumps(coco))
    code, err = run_cli(["eval", "--weights", str(weights), "--data", str(data), "--img", str(IMG)], capsys)
    assert code == 2 and ("has no boxes" in err if case == "no annotations" else "no usable images" in err)


def test_class_names_that_differ_are_an_error_for_training_and_a_named_warning_for_evaluation(
        weights, data_yaml, tmp_path, capsys):
    data, ann, coco = copy_data(data_yaml, tmp_path)
    config = yaml.safe_load(data.read_text())
    data.write_text(yaml.safe_dump({**config, "names": list(reversed(config["names"]))}))  # yaml vs json
    code = main(["-q", "finetune", "--cfg", "yolov7-tiny", "--data", str(data), "--out", str(tmp_path / "run"),
                 *TRAIN_FLAGS])
    err = capsys.readouterr().err.splitlines()[-1]  # after the note that the new model takes the yaml's names
    assert code == 2 and "make them agree" in err and not (tmp_path / "run" / "args.yaml").exists()
    data.write_text(yaml.safe_dump(config))
    coco["categories"][0]["name"] = "renamed"
    ann.write_text(json.dumps(coco))
    assert main(["-q", "eval", "--weights", str(weights), "--data", str(data), "--img", str(IMG), "--bench-runs",
                 "0", "--out", str(tmp_path / "e.json")]) == 0
    assert "1 of 5 class names of the model differ" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--conf", "nan"], "conf_thres must be in [0, 1)"), (["--iou", "1.5"], "iou_thres must be in (0, 1]"),
    (["--img", "0"], "img_size must be a multiple of 32"), (["--img", "100"], "img_size must be a multiple of 32"),
    (["--max-det", "0"], "max_det must be at least 1"),
])
def test_bad_settings_fail_before_anything_is_loaded(flags, message, tmp_path, capsys):
    missing = tmp_path / "never-read.pt"  # the settings are refused before the weights are even looked for
    code, err = run_cli(["eval", "--weights", str(missing), "--data", str(tmp_path / "d.yaml"), *flags], capsys)
    assert code == 2 and message in err


def test_a_nan_ratio_fails_before_the_model_is_loaded(tmp_path, capsys):
    code, err = run_cli(["prune", "--weights", str(tmp_path / "never-read.pt"), "--ratio", "nan"], capsys)
    assert code == 2 and "must be in [0, 1)" in err


# -- 6. filesystem faults ------------------------------------------------------------------------
FS_FAULTS = {errno.ENOSPC: "no space left on the disk", errno.EROFS: "read-only", errno.EACCES: "permission denied"}


@pytest.mark.parametrize("code", list(FS_FAULTS))
def test_a_failing_disk_gives_one_line_naming_the_output_and_the_cause(code, weights, tmp_path, capsys, monkeypatch):
    def fail(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fail)  # every atomic writer makes its bytes durable before the rename
    out = tmp_path / "out" / "p.pt"
    code_, err = run_cli(["prune", "--weights", str(weights), "--img", str(IMG), "--out", str(out),
                          "--no-latency"], capsys)
    assert code_ == 2 and f"cannot write {out}" in err and FS_FAULTS[code] in err
    assert list(out.parent.iterdir()) == []  # neither the output nor a temporary file is left


def test_torch_on_a_full_disk_is_named_not_unexpected_pos(weights, tmp_path, capsys, monkeypatch):
    import yolo_prune.io.atomic as atomic

    class FullDisk(io.FileIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic, "open", lambda path, mode: FullDisk(path, mode), raising=False)
    out = tmp_path / "p.pt"
    code, err = run_cli(["prune", "--weights", str(weights), "--img", str(IMG), "--out", str(out), "--no-latency"],
                        capsys)
    assert code == 2 and f"cannot write {out}: no space left" in err and "unexpected pos" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["report", "eval", "make-synthetic", "finetune"])
def test_every_writer_names_a_full_disk(command, weights, data_yaml, tmp_path, capsys, monkeypatch):
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps({"models": [{"name": "a", "gmacs": 1.0, "map50_95": 0.3}]}))
    argv = {"report": ["report", str(run_json), "--out", str(tmp_path / "out")],
            "eval": ["eval", "--weights", str(weights), "--data", str(data_yaml), "--img", str(IMG), "--bench-runs",
                     "0", "--out", str(tmp_path / "out" / "e.json")],
            "make-synthetic": ["make-synthetic", "--out", str(tmp_path / "out"), "--n-train", "1", "--n-val", "1",
                               "--img", str(IMG)],
            "finetune": ["finetune", "--weights", str(weights), "--data", str(data_yaml), "--out",
                         str(tmp_path / "out"), *TRAIN_FLAGS]}[command]
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left")))
    code, err = run_cli(argv, capsys)
    assert code == 2 and f"cannot write {tmp_path / 'out'}" in err and "no space left on the disk" in err
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != LOCK_NAME]


# -- 7. interrupts -------------------------------------------------------------------------------
def _wait_for(condition, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_sigterm_and_sigint_end_fine_tuning_with_one_line_and_an_intact_last_pt(weights, data_yaml, tmp_path,
                                                                                capsys):
    run = tmp_path / "run"
    last = run / "weights" / "last.pt"
    train = ["--epochs", "1000", *TRAIN_FLAGS[2:]]
    base = [sys.executable, "-m", "yolo_prune.cli", "-q", "finetune"]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    first = subprocess.Popen([*base, "--weights", str(weights), "--data", str(data_yaml), "--out", str(run), *train],
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=REPO_ROOT,
                             preexec_fn=_default_sigint)
    _wait_for(last.exists)
    code, err = run_cli(["finetune", "--weights", str(weights), "--data", str(data_yaml), "--out", str(run),
                         "--exist-ok", *train], capsys)  # a second writer, even with --exist-ok, is refused
    assert code == 2 and f"in use by another run (pid {first.pid}" in err
    first.send_signal(signal.SIGTERM)
    err = first.communicate(timeout=120)[1].strip()
    assert first.returncode == 143 and "Traceback" not in err
    assert err.splitlines()[-1] == (f"yolo-prune finetune: interrupted (SIGTERM); the last state is {last} (intact); "
                                    f"continue with: yolo-prune finetune --resume {run}")
    epoch = _resumable_epoch(last)
    second = subprocess.Popen([*base, "--resume", str(run)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              text=True, env=env, cwd=REPO_ROOT, preexec_fn=_default_sigint)
    _wait_for(lambda: _resumable_epoch(last) > epoch)  # the resumed run has saved an epoch of its own
    second.send_signal(signal.SIGINT)
    err = second.communicate(timeout=120)[1].strip()
    assert second.returncode == 130 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("yolo-prune finetune: interrupted (SIGINT); the last state is")
    assert _resumable_epoch(last) > epoch


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the arms train side by side from 2 cores on")
def test_an_interrupted_main_job_stops_the_control_process_it_started(weights, data_yaml, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "yolo_prune.cli", "-q", "run", "--weights", str(weights), "--data", str(data_yaml),
               "--out", str(out), "--img", str(IMG), "--ratio", "0.3", "--round-to", "1", "--finetune-epochs", "1000",
               "--batch", "2", "--workers", "0", "--device", "cpu"]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    job = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env,
                           cwd=REPO_ROOT, preexec_fn=_default_sigint)
    control_last = out / "control" / "weights" / "last.pt"
    _wait_for(lambda: control_last.exists() and (out / "finetune" / "weights" / "last.pt").exists())  # both at once
    holder = int((out / "control" / LOCK_NAME).read_text().split()[1])
    assert holder != job.pid  # the control arm trains in a process of its own
    job.send_signal(signal.SIGTERM)
    err = job.communicate(timeout=120)[1].strip()
    assert job.returncode == 143 and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("yolo-prune run: interrupted (SIGTERM)")
    _wait_for(lambda: not _alive(holder), 30)  # stopped with it, not left training
    assert _resumable_epoch(control_last) >= 0  # and its last epoch is kept for the re-run


SWALLOWED_INTERRUPT = """
import contextlib, signal, sys, time, weakref
from yolo_prune.interrupts import Interrupted, termination_as_interrupt

def interrupt(signum, frame):  # what the guard installs, without its redelivery
    raise Interrupted(signum)

def land_in_a_finalizer(ref):  # the handler runs here, in a weakref callback, where CPython ignores its exception
    signal.raise_signal(signal.SIGTERM)

signal.signal(signal.SIGTERM, interrupt)
guard = termination_as_interrupt() if sys.argv[1] == "guarded" else contextlib.nullcontext()
try:
    with guard:
        thing = type("Thing", (), {})()
        ref = weakref.ref(thing, land_in_a_finalizer)
        del thing
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # stands for a training loop
            time.sleep(0.01)
    print("kept running")
except Interrupted as err:
    print("stopped by", err)
"""


@pytest.mark.skipif(not hasattr(signal, "raise_signal") or os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("guard, expected", [("guarded", "stopped by SIGTERM"), ("bare", "kept running")])
def test_an_interrupt_swallowed_by_a_finalizer_is_delivered_again(guard, expected):
    # the main job once ran on after SIGTERM: the handler's exception had landed in a weakref callback
    done = subprocess.run([sys.executable, "-c", SWALLOWED_INTERRUPT, guard], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60)
    assert done.stdout.strip() == expected, done.stderr
    assert ("Exception ignored" in done.stderr) == (guard == "bare")  # redelivered quietly


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default, so Python turns it into KeyboardInterrupt.

    A shell starts background jobs with SIGINT ignored, children inherit that, and Python then leaves
    it ignored: a test suite run in the background (CI, ``&``) would wait forever for the SIGINT exit.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _resumable_epoch(last: Path) -> int:
    """The epoch of a whole, resumable ``last.pt`` (the file is replaced atomically, so it is never partial)."""
    _, ckpt = get_adapter("yolov7").load_training_checkpoint(last)
    checkpointing.check_resumable(ckpt, last)
    return int(ckpt["epoch"])


# -- 8. no raw tracebacks ------------------------------------------------------------------------
@pytest.mark.parametrize("content, accepted", [
    ([1, 2], False), ("a string", False), (None, False), ({"models": "x"}, False),
    ({"models": [{"name": "a", "gmacs": "lots"}]}, False), ({"models": [{"name": "a", "channels": [3]}]}, False),
    ({"models": [{"name": "a", "gmacs": "2.2", "map50_95": "0.3"}, {"name": "b", "gmacs": 1.1}]}, True),
    ({"models": [{"name": "only a name"}]}, True), ({"steps": [1, 2]}, False), ({"metrics": 5}, False),
])
def test_report_accepts_or_clearly_refuses_any_json(content, accepted, tmp_path, capsys):
    path = tmp_path / "in.json"
    path.write_text(json.dumps(content))
    out = tmp_path / "report"
    code, err = run_cli(["report", str(path), "--out", str(out)], capsys)
    if accepted:
        lines = (out / "report.md").read_text().splitlines()
        table = lines[next(i for i, line in enumerate(lines) if line.startswith("| model")) + 2:]  # after the header
        rows = [line.split("|")[1:-1] for line in table if line.startswith("|")]
        assert code == 0 and [cell.strip() for cell in rows[-1][:4]] == (["b", "-", "1.1", "2"] if len(rows) == 2
                                                                         else ["only a name", "-", "-", "-"])
    else:
        assert code == 2 and err.startswith("yolo-prune report: error:") and not out.exists()


def test_a_report_that_fails_midway_leaves_no_partial_plots(tmp_path, capsys, monkeypatch):
    import yolo_prune.report.render as render

    path = tmp_path / "in.json"
    path.write_text(json.dumps({"models": [{"name": "a", "gmacs": 2.0, "map50_95": 0.3, "fps": 50}]}))
    out = tmp_path / "report"
    assert main(["-q", "report", str(path), "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(render, "_html", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    code, err = run_cli(["report", str(path), "--out", str(out), "--force", "--title", "new"], capsys)
    assert code == 2 and "boom" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the old report, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json", "report"]  # no staging folder left


def test_internal_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import yolo_prune.report as report

    missing = str(tmp_path / "missing.json")
    monkeypatch.setattr(report, "load_entries", lambda paths: 1 / 0)  # a bug, not a user error
    code, err = run_cli(["report", missing], capsys)
    assert code == 1 and "internal error ZeroDivisionError" in err and "--debug" in err
    for argv in (["--debug", "report", missing], ["report", "--debug", missing]):
        with pytest.raises(ZeroDivisionError):
            main(argv)
