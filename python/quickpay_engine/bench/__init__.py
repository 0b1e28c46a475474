"""Load generation against a running engine, for `quickpay bench` and `make bench`.

- ``scenario``: what is sent (the mix of payments, malformed, declined, fraud-like and
  duplicate requests), deterministic for a seed;
- ``load``: one worker's closed or open loop over Pay or PayStream;
- ``runner``: one or several worker processes, merged, with live progress;
- ``histogram``: HDR latency histograms that merge across processes;
- ``report``: the final table, the JSON file and the PNG plot;
- ``echo``: the bare gRPC baseline server the engine is compared with.
"""
