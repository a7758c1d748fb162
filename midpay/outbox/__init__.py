"""Payment events for the shop's own app: the outbox, its endpoints and their deliveries."""
