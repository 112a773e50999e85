# Aggregate callback for test/dist/bench/bootstrap-bench.js. It writes, as JSON, to the file that
# the environment variable KUBETRUST_BENCH_TIMING names: when each task started, when each host
# finished it and with what status, and the play recap per host. Times are seconds of
# time.monotonic() since the callback was loaded.
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: kubetrust_bench_timing
    type: aggregate
    short_description: per-host task times for the kubetrust bootstrap benchmark
    description:
      - Writes task start times, per-host finish times and the recap to the JSON file named by
        the environment variable KUBETRUST_BENCH_TIMING.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kubetrust_bench_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._origin = time.monotonic()
        self._tasks = []

    def _now(self):
        return time.monotonic() - self._origin

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._tasks.append({"name": task.get_name(), "start": self._now(), "hosts": {}})

    def _record(self, result, status):
        if not self._tasks:
            return
        self._tasks[-1]["hosts"][result._host.get_name()] = {
            "status": status,
            "end": self._now(),
            "changed": bool(result._result.get("changed", False)),
        }

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_playbook_on_stats(self, stats):
        document = {
            "end": self._now(),
            "tasks": self._tasks,
            "stats": {host: stats.summarize(host) for host in sorted(stats.processed)},
        }
        with open(os.environ["KUBETRUST_BENCH_TIMING"], "w", encoding="utf-8") as output:
            json.dump(document, output)
