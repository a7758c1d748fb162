"""Payment events for the shop's own app: the documents, the endpoints, their delivery.

    events     the event document of one payment_events row (``render``)
"""
