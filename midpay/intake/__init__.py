"""ONE pipeline for a notification from any source: decode, store, verify, confirm or prove offline, apply, record."""
