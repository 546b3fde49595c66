"""The HTTP API's handlers by resource, and the pages served beside it (the older handlers still
live in `broker/handlers/`)."""
