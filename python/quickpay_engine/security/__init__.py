"""Who may call what: TLS on the gRPC port, caller identities, roles and rate limits."""
