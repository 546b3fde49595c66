"""The HTTP API's handlers and the pages served beside it."""
