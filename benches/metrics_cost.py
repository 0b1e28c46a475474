"""What each metrics hook costs, timed alone: per gRPC call, per batch stage, per batch
outcome count, and one scrape.

    .venv/bin/python benches/metrics_cost.py
"""

import collections
import timeit

from prometheus_client import generate_latest

from quickpay_engine.metrics import Metrics

m = Metrics()
n = 200_000
t = timeit.timeit(lambda: m.rpc("Pay", "OK", 0.001), number=n) / n
print(f"metrics.rpc per call: {t * 1e6:.2f} us")
t = timeit.timeit(lambda: m.stage("gateways", 0.001), number=n) / n
print(f"metrics.stage per batch-stage: {t * 1e6:.2f} us")
c = collections.Counter({("SETTLED", ""): 500})
t = timeit.timeit(lambda: m.outcomes(c), number=n) / n
print(f"metrics.outcomes per batch: {t * 1e6:.2f} us")
for i in range(50):
    m.rpc(f"R{i % 7}", "OK", 0.01)
t = timeit.timeit(lambda: generate_latest(m.registry), number=2000) / 2000
print(f"scrape (generate_latest, no ledger): {t * 1e3:.3f} ms")
