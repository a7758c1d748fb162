"""Receivers of midpay's payment events for the tests, verifying with the real ``standardwebhooks`` packages.

Both answer to one interface: ``with Receiver(secrets) as r``, ``r.url``,
``r.control(answer=…, mode="answer"|"stall"|"drop")``, ``r.received()``.

    python_receiver  http.server on loopback, PyPI's standardwebhooks; also a seeded
                     ``random`` mode (``randomly``: 500s, answers withheld past the
                     deliverer's timeout), a fixed ``port``, and each request's answer
    node_receiver    node receiver.js, npm's standardwebhooks (installed by npm.py)
"""
