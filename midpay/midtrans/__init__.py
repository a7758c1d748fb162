"""The Midtrans edge: the Core API client, its transport, and notification bodies (signature check, parsing)."""
