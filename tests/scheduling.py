"""`make test`'s scheduler: pytest-xdist's `--dist loadfile` (a test file to a worker), made safe for a worker that dies.

xdist 3.8 (the newest release) deadlocks after a worker dies mid-run: `remove_node` puts back on the queue every
file the dead worker ever ran, finished ones included, and a worker sent a file with nothing left to run, or a
single test, waits for ever for a test that would follow it (xdist's worker runs a test only once it holds the next
one or is told there is none). Both workers then sit idle and the run never ends: CI stopped it at 90 minutes.
Upstream: pytest-dev/pytest-xdist issues #784, #1313, #1323, #1327, pull requests #1324, #1328, #1363 and #1364
(merged or open, none released). Here:
- only the dead worker's unfinished files go back on the queue, each with what was left of it;
- the test it died in is run again once, by the new worker (its own result counts); a test that takes a second
  worker down is not run a third time;
- a worker is always given two tests or told there are no more, and never before its collection is in (#1364).
"""

from __future__ import annotations

from collections import Counter

from xdist.scheduler import LoadFileScheduling


class CrashSafeLoadFileScheduling(LoadFileScheduling):
    def __init__(self, config, log=None):
        super().__init__(config, log)
        self.crashes: Counter[str] = Counter()  # test id -> how many workers died running it

    def remove_node(self, node) -> str | None:
        workload = self.assigned_work.pop(node)
        unfinished = {scope: unit for scope, unit in workload.items() if not all(unit.values())}
        if not unfinished:
            return None  # a worker that finished, or died between files
        # the worker runs its tests in the order given: the first one not reported is the one it died in
        crashitem = next(nodeid for unit in unfinished.values() for nodeid, done in unit.items() if not done)
        self.crashes[crashitem] += 1
        if self.crashes[crashitem] > 1:
            unfinished[self._split_scope(crashitem)][crashitem] = True
            unfinished = {scope: unit for scope, unit in unfinished.items() if not all(unit.values())}
        self.workqueue.update(unfinished)
        for other in self.assigned_work:
            self._reschedule(other)
        return crashitem

    def _reschedule(self, node) -> None:
        if node.shutting_down or node not in self.registered_collections:
            return  # a new worker still collecting: schedule() serves it once it has
        if not self.workqueue:
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) > 2:
            return
        self._assign_work_unit(node)
        while self._pending_of(self.assigned_work[node]) < 2:
            if not self.workqueue:
                node.shutdown()  # its last test runs once it knows none follows
                return
            self._assign_work_unit(node)
