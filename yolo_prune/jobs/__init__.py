"""Whole jobs, one module each: a settings object in, outputs written, a JSON-ready summary out.

The command line (``yolo_prune.cli``) and the public API (``yolo_prune.api``) call these; each
job loads its model through ``yolo_prune.adapters``, drives the generic packages with the
family's adapter, writes its outputs atomically and its resolved settings next to them.

* ``finetune``: fine-tune (or train from a cfg) or resume, with the family's trainer;
* ``prune``: channel / unstructured / iterative pruning of one checkpoint, with a before/after report;
* ``iterative``: prune and fine-tune in steps, scored by COCO mAP;
* ``evaluate``: COCO mAP, latency and size of one checkpoint;
* ``sensitivity``: per-unit sensitivity scan and ratio allocation into a recipe.
"""
