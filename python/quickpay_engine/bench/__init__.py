"""Load generation against a running engine: scenarios, the client loop, the summary."""
