"""Run JSONs -> report entries: one row per model, whatever job wrote the file.

An entry is a plain dict with these keys (any may be None except ``name``):

    name        str     shown in tables and legends
    source      str     checkpoint path (used to merge rows from different JSONs)
    params_m    float   parameters, millions
    gmacs       float   multiply-accumulates at the run's input size, billions
    file_mib    float   size in MiB (2**20 bytes): of the weights in float16 where the run JSON
                        gives it (``fp16_mib``, so models of one precision are compared),
                        else of the checkpoint file
    map50_95    float   COCO mAP@[.5:.95] (0..1)
    map50       float   COCO mAP@.5 (0..1)
    fps         float   images per second (batch 1 unless the run says otherwise)
    latency_ms  float   per-image latency
    channels    dict    {conv name: output channels}
    family      str     detector family (``yolov7``, ``ultralytics``): "MACs x" compares within one
    timing      str     how ``latency_ms`` was measured, ``"label: details"`` (None: the model timed
                        alone; the main job's entries carry the interleaved A/B's)

Accepted files (``entries_from_json``):

* ``{"models": [entry, ...]}`` or a bare list of entries (e.g. the main job's report);
* a prune report (``yolo-prune prune``): ``before`` / ``after`` dicts plus ``channels_before`` /
  ``channels_after`` -> two entries, the original and the pruned model (a bare
  ``PruneResult.summary()`` with ``gmacs_before`` / ``gmacs_after`` too);
* an evaluation result: ``yolo-prune eval``'s report (``metrics`` / ``model`` / ``latency``) or a
  flat dict with ``map50_95`` -> one entry;
* an iterative-pruning result: ``steps`` -> one entry per step.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Iterable

from yolo_prune.registry import unknown_name_message

ENTRY_KEYS = ("name", "source", "params_m", "gmacs", "file_mib", "map50_95", "map50", "fps", "latency_ms", "channels",
              "family", "timing")
TIMED_ALONE = "each model timed alone"  # the ``timing`` of an entry that names none
NUMBER_KEYS = ("params_m", "gmacs", "file_mib", "map50_95", "map50", "fps", "latency_ms")
# other spellings seen in run JSONs -> entry key
_ALIASES = {"mAP50-95": "map50_95", "map": "map50_95", "mAP50": "map50", "latency_ms_median": "latency_ms",
            "weights": "source", "out": "source", "size_mb": "file_mib", "file_mb": "file_mib"}


def make_entry(values: dict[str, Any], *, name: str | None = None, strict: bool = False) -> dict[str, Any]:
    """A normalised entry from ``values`` (aliases resolved, FPS derived from latency when absent).

    Numbers written as strings (``"2.2"``) are read as numbers; anything else that is not a number
    where one belongs is refused, naming the key and the value.

    Args:
        values: Raw keys; unknown keys are ignored unless ``strict``.
        name: Name to use when ``values`` has none.
        strict: Refuse keys that look like typos of entry keys (``gmac``), naming the close match.
    """
    if not isinstance(values, dict):
        raise ValueError(f"a report entry must be an object such as {{'name': 'tiny', 'gmacs': 3.3}}, got {values!r}")
    entry: dict[str, Any] = dict.fromkeys(ENTRY_KEYS)
    for key, value in values.items():
        key = _ALIASES.get(key, key)
        if key in entry:
            entry[key] = value
        elif strict and difflib.get_close_matches(key, ENTRY_KEYS, n=1, cutoff=0.8):
            # extra keys (device, settings ...) are fine; a near-miss of a known key is a typo
            raise ValueError(unknown_name_message("report entry key", key, ENTRY_KEYS))
    source_stem = Path(str(entry["source"])).stem if entry["source"] else None
    entry["name"] = str(entry["name"] or source_stem or name or "model")
    if entry["source"] is not None:
        entry["source"] = str(entry["source"])
    if values.get("fp16_mib") is not None:  # one precision for every model (files may be fp16 or fp32)
        entry["file_mib"] = values["fp16_mib"]
    for key in NUMBER_KEYS:
        entry[key] = _number(entry[key], key, entry["name"])
    entry["channels"] = _channels(entry["channels"], entry["name"])
    if entry["fps"] is None and entry["latency_ms"]:
        entry["fps"] = 1000.0 / float(entry["latency_ms"])
    return entry


def _number(value: Any, key: str, name: str) -> float | None:
    """``value`` as a number (a numeric string is accepted); None stays None."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    try:
        number = float(value) if isinstance(value, str) else None
    except ValueError:
        number = None
    if number is None:
        raise ValueError(f"report entry {name!r}: {key} must be a number, got {value!r}")
    return number


def _channels(value: Any, name: str) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(_number(v, "channels", name) is not None for v in value.values()):
        raise ValueError(f"report entry {name!r}: channels must map conv names to channel counts, got "
                         f"{str(value)[:80]}")
    return {str(k): int(float(v)) for k, v in value.items()}


def entries_from_json(path: str | Path) -> list[dict[str, Any]]:
    """The entries one run JSON holds (see the module docstring for the accepted shapes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"report input {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"report input {path} is not a text file (a checkpoint?); pass the run JSONs "
                         f"(prune, eval or main-job reports)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"report input {path} is not JSON: {err}") from None
    if isinstance(data, list):
        return [make_entry(e, name=f"{path.stem}[{i}]", strict=True) for i, e in enumerate(data)]
    if not isinstance(data, dict):
        raise ValueError(f"report input {path} holds a {type(data).__name__}; expected an object or a list")
    if isinstance(data.get("models"), list):
        return [make_entry(e, name=f"{path.stem}[{i}]", strict=True) for i, e in enumerate(data["models"])]
    if "gmacs_before" in data and "gmacs_after" in data and "before" not in data:
        # a bare PruneResult.summary(): rebuild the before / after dicts of the full prune report
        data = {**data, **{side: {"params_m": data.get(f"params_m_{side}"), "gmacs": data[f"gmacs_{side}"]}
                           for side in ("before", "after")}}
    if isinstance(data.get("before"), dict) and isinstance(data.get("after"), dict):
        return _from_prune_report(data, path)
    metrics = data.get("metrics")
    if "map50_95" in data or "mAP50-95" in data or (isinstance(metrics, dict) and "map50_95" in metrics):
        return [_from_eval(data, path)]
    if isinstance(data.get("steps"), list) and all(isinstance(step, dict) for step in data["steps"]):
        return _from_iterative(data, path)
    raise ValueError(f"{path} is not a run JSON the report understands: expected a 'models' list, a prune report "
                     f"('before'/'after'), an evaluation ('map50_95') or an iterative result ('steps'); "
                     f"top-level keys were {sorted(data)[:8]}")


def _from_prune_report(data: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    weights, out = data.get("weights"), data.get("out")
    original = make_entry({**data["before"], "channels": data.get("channels_before")},
                          name=Path(str(weights)).stem if weights else f"{path.stem} (original)")
    original["source"] = str(weights) if weights else None
    pruned = make_entry({**data["after"], "channels": data.get("channels_after")},
                        name=Path(str(out)).stem if out else f"{path.stem} (pruned)")
    pruned["source"] = str(out) if out else None
    return [original, pruned]


def _from_eval(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A flat metrics dict, or ``yolo-prune eval``'s {weights, metrics, model, latency} report."""
    values = {k: v for k, v in data.items() if k not in ("metrics", "model", "latency")}
    for section in ("model", "metrics"):
        if isinstance(data.get(section), dict):
            values.update(data[section])
    latency = data.get("latency")
    if isinstance(latency, dict):  # the fused batch-1 benchmark beats the evaluation loop's timing
        values.update({"latency_ms": latency.get("latency_ms_median"), "fps": latency.get("fps")})
    speed = values.pop("speed_ms", None)
    if values.get("latency_ms") is None and isinstance(speed, dict) and speed:
        # per-image time of the evaluation run (data, pre-process, inference, NMS ...)
        values["latency_ms"] = sum(float(v) for v in speed.values() if isinstance(v, (int, float)))
    elif values.get("latency_ms") is None and isinstance(speed, (int, float)):
        values["latency_ms"] = float(speed)
    return make_entry(values, name=path.stem)


def _from_iterative(data: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    settings = data.get("settings")
    metric = settings.get("metric", "map50_95") if isinstance(settings, dict) else "map50_95"
    rows = []
    for step in data["steps"]:
        rows.append(make_entry({"gmacs": step.get("gmacs"), "params_m": step.get("params_m"),
                                metric: step.get("score")}, name=f"{path.stem} step {step.get('step')}"))
    return rows


def merge_entries(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merges entries of the same model (same ``source`` path, else same ``name``), first seen first.

    Later values fill what earlier ones left empty, so a prune report (size, GMACs) and an
    evaluation of the same checkpoint (mAP, FPS) become one row.
    """
    merged: dict[str, dict[str, Any]] = {}
    for entry in entries:
        key = _merge_key(entry)
        if key not in merged:
            merged[key] = dict(entry)
            continue
        for field, value in entry.items():
            if merged[key].get(field) is None and value is not None:
                merged[key][field] = value
    return distinct_names(list(merged.values()))


def distinct_names(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries whose shown names repeat (two runs' ``best``) get the folders that tell them apart.

    ``runs/a/weights/best.pt`` and ``runs/b/weights/best.pt`` become ``best (a/weights)`` and
    ``best (b/weights)``; entries without a source are numbered (``best #2``).
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_name.setdefault(entry["name"], []).append(entry)
    for name, same in by_name.items():
        if len(same) < 2:
            continue
        folders = [Path(str(e["source"])).parent.parts if e.get("source") else () for e in same]
        for depth in range(1, max(len(f) for f in folders) + 1):
            tails = ["/".join(f[-depth:]) for f in folders]
            if len(set(tails)) == len(tails) and all(tails):
                break
        else:
            tails = [""] * len(same)
        for k, (entry, tail) in enumerate(zip(same, tails, strict=True)):
            entry["name"] = f"{name} ({tail})" if tail else (name if k == 0 else f"{name} #{k + 1}")
    return entries


def _merge_key(entry: dict[str, Any]) -> str:
    if entry.get("source"):
        return "source:" + str(Path(entry["source"]).expanduser().resolve())
    return "name:" + entry["name"]
