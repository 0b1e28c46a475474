"""The gateway simulator: an acquirer stand-in served over HTTP/JSON on loopback.

``quickpay gateway-sim`` runs one; ``gateways.supervisor`` starts the bundled ones. Its
server is Rust (engine/src/python/sim/); here are the fault model and its checks
(faults.py), the hooks the server calls for the rare calls (hooks.py), and the
settlement report read from its books (ledger.py, report.py).
"""
