"""Reconcile's writes: the answers that change rows, several rows to one transaction.

Reconcile's workers only ask Midtrans (``refresh.ask``); the answers that need a write
come back to the run's loop, which applies them a batch at a time through the one path
for answers (``payments.answers.apply_batch``: one transaction, ``transition`` for the
whole batch) and completes the rows' leases only once that transaction has committed.
"""

BATCH_ROWS = 64  # answers applied in one transaction
BATCH_SECONDS = 0.2  # the longest an answer waits for its batch to fill
