"""The HTTP face: routes, request handling (/predict, /webhook, interactive), errors and the server."""
