"""Helpers for tests/test_proposals.py that worker processes import: kept free of heavy imports (no torch)."""

from __future__ import annotations

import os
import time


def dies_on_bad(task: tuple) -> dict:
    """A stand-in for the proposal worker: the image "bad" kills its process, as the OOM killer would."""
    if task[0] == "bad":
        os._exit(9)
    time.sleep(0.05)
    return {"id": task[0], "ok": True}
