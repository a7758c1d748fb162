"""Payments and THE transition that moves one: lock, check Midtrans' answer once, decide, write."""
