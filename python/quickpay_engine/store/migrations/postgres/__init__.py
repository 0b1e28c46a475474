"""PostgreSQL schema versions: NNNN_name.sql, applied in order by `quickpay db migrate`."""
