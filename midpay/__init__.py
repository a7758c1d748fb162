"""midpay: GoPay and QRIS payment operations over Midtrans and PostgreSQL."""

__version__ = "0.1.0"
