"""The gateway simulator: an acquirer stand-in served over HTTP/JSON on loopback.

``quickpay gateway-sim`` runs one; ``gateways.supervisor`` starts the bundled ones.
"""
