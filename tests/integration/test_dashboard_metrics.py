"""Every metric the shipped Grafana dashboard reads is on a live /metrics (the offline
checks of the dashboard are tests/unit/test_dashboard.py)."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.dashboard import dashboard_metric_names, exposed_names, load_dashboard

pytestmark = pytest.mark.integration

CAPITAL = [{"role": "user", "content": "What is the capital of France? Reply with one word."}]
# Cheap requests that give the dashboard's labelled series their first samples: an
# answer without thinking, a thinking one (first thinking token, thinking tokens per
# request) and a parallel one (candidates).
REQUESTS = [{}, {"reasoning_effort": "minimal"},
            {"reasoning": {"strategy": "self_consistency", "samples": 2, "effort": "minimal"}}]
# Series that exist only after an event these requests do not cause: a refusal
# (test_lifecycle overloads a server of its own) and an early stop (test_parallel).
# Until then /metrics declares the family (its `# TYPE` line) under the same name.
AFTER_AN_EVENT = {"ponder_requests_rejected_total", "ponder_early_stop_tokens_saved_total",
                  "ponder_early_stops_total"}


def test_every_metric_the_dashboard_reads_is_on_metrics(live, client: openai.OpenAI) -> None:
    for extra in REQUESTS:
        client.chat.completions.create(model=live.model, messages=CAPITAL, max_tokens=4, temperature=0,
                                       extra_body=extra)
    r = httpx.get(live.base_url + "/metrics", headers=live.headers())
    assert r.status_code == 200
    samples, declared = exposed_names(r.text)
    wanted = dashboard_metric_names(load_dashboard())
    assert AFTER_AN_EVENT <= wanted
    missing = {name for name in wanted if name not in samples and not (name in AFTER_AN_EVENT and name in declared)}
    assert not missing, f"the dashboard reads series /metrics does not have: {sorted(missing)}"
