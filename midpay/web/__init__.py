"""The HTTP receiver (`midpay listen`): the WSGI app, thin over the intake, and its server."""
