"""Refunds: the refund command, safe to rerun, and the ledger as it reads."""
