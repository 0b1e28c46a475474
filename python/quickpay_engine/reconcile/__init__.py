"""Reconciliation: a gateway's settlement report against the billing database."""
