"""Events out: the outbox relay and the broker it publishes to."""
