"""The cron job: every due open payment checked against Midtrans, under leases, paced."""
