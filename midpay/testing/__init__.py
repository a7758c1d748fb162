"""Crash points for the reliability tests, shipped because production code calls them.

``midpay.refunds.command`` calls ``crashpoints.reach(<point>)`` between the steps of a
refund; the reliability tests run real ``midpay refund`` processes and kill or pause
them at exactly those steps, so the hook has to be in the code that ships. It is
inert unless the environment variable ``MIDPAY_TEST_CRASH_AT`` is set (unset, ``reach``
returns at once, having read one variable). Nothing else in ``midpay`` imports this package.
"""
