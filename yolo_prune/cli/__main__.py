"""``python -m yolo_prune.cli``: the same as the ``yolo-prune`` command."""
import sys

from yolo_prune.cli import main

sys.exit(main())
