"""Payment gateways: the acquirer simulator, the HTTP adapters, routing and failover.

Knows only ``domain`` and libraries: no database, no engine, no gRPC.
"""
