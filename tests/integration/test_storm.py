"""Storm: hundreds of streamed requests of mixed strategies, clients leaving at
random moments. Afterwards the engine holds nothing within 5 s and the server's
memory is back near its baseline. (`make soak` runs the long version.)"""
from __future__ import annotations

import gc

import psutil
import pytest

from loadtests.storm import storm, until_idle

# A server of its own (or minutes of load): `make test-slow`, not `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Growth allowed over the warmed-up baseline: allocator arenas, metric label
# series and caches settle after the warm-up; a leak of per-request state
# (engine outputs, token lists, tasks) over 200 requests would exceed it.
MARGIN_MB = 48


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


@pytest.mark.asyncio
async def test_storm_of_mixed_strategies_with_random_disconnects(live) -> None:
    headers = live.headers()
    warm = await storm(live.base_url, headers, live.model, count=60, concurrency=32, seed=1)
    assert warm.outcomes["failed"] == 0, warm.failures[:5]
    assert (await until_idle(live.base_url, headers))[0] < 5
    gc.collect()
    baseline = _rss_mb(live.pid)

    report = await storm(live.base_url, headers, live.model, count=200, concurrency=48, seed=2)
    print("storm", report.row(), dict(report.by_strategy))
    assert report.outcomes["failed"] == 0, report.failures[:5]
    assert report.outcomes["dropped"] >= 40 and report.outcomes["completed"] >= 40, report.row()
    drained, load = await until_idle(live.base_url, headers)
    assert drained <= 5.0, load  # 0 running, 0 waiting, nothing admitted
    after = _rss_mb(live.pid)
    print(f"rss baseline {baseline:.0f} MB, after {after:.0f} MB")
    assert after - baseline < MARGIN_MB, (baseline, after)
