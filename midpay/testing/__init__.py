"""Hooks for the reliability tests: inert unless a test sets them."""
