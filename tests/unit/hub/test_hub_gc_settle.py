"""``ioc hub``'s garbage collector once started: the start-up frozen, the young generation collected less often, and
what comes after (a cycle dropped later) still collected. In a child process: freezing would keep this one's
objects."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc, weakref
from hub.cli import GC_GEN0_THRESHOLD, settle_garbage_collector

class Node:
    pass

early = Node(); early.me = early; early_ref = weakref.ref(early)
del early  # garbage of the start-up: collected before the freeze, not frozen with it
settle_garbage_collector()
assert early_ref() is None
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD == 10_000, gc.get_threshold()
late = Node(); late.me = late; late_ref = weakref.ref(late)
del late  # a cycle dropped after the start: the collector still finds it
gc.collect()
assert late_ref() is None
print("ok")
"""


def test_settle_freezes_once_and_later_cycles_are_collected() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
