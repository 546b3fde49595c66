"""`python -m broker`."""

from broker.cli import main

# Guarded: a worker process (broker.api.offload) imports this module again and must not serve.
if __name__ == "__main__":
    main()
