"""Payment gateways: the acquirer simulator, the HTTP adapters, routing and failover.

Knows only ``domain`` and libraries: no database, no engine, no gRPC. The saga uses:

    config, stop = await open_gateways(settings.gateways, settings.data_dir)
    async with GatewayRouter(config) as router:
        results = await router.sale_many(requests, deadline)   # list[GatewayResult]
    await stop()
"""

from quickpay_engine.gateways.config import GatewayConfig, GatewaysConfig, load_config
from quickpay_engine.gateways.router import GatewayRouter
from quickpay_engine.gateways.supervisor import (
    bundled_simulators,
    open_gateways,
    start_bundled_simulators,
)
from quickpay_engine.gateways.types import (
    BankAccount,
    Card,
    CarrierBalance,
    GatewayOutcome,
    GatewayResult,
    Instrument,
    SaleRequest,
    Wallet,
)

__all__ = [
    "BankAccount",
    "Card",
    "CarrierBalance",
    "GatewayConfig",
    "GatewayOutcome",
    "GatewayResult",
    "GatewayRouter",
    "GatewaysConfig",
    "Instrument",
    "SaleRequest",
    "Wallet",
    "bundled_simulators",
    "load_config",
    "open_gateways",
    "start_bundled_simulators",
]
