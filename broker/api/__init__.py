"""The HTTP API's handlers, by resource (the older ones still live in `broker/handlers/`)."""
