"""quickpay-engine: settlement engine for telecom quick payments.

The compiled core is the private module ``quickpay_engine._engine``; this package is
the public face: the gRPC front end, settlement orchestration, stores and the CLI.
"""

from importlib.metadata import version

from quickpay_engine._engine import BATCH_MAX, Engine, currency_exponent, reject_codes

__all__ = ["BATCH_MAX", "Engine", "currency_exponent", "reject_codes"]
# The installed distribution's version (pyproject.toml), never a second copy of it.
__version__ = version("quickpay-engine")
