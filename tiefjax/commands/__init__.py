"""One module per CLI area; each exposes ``register(subparsers)`` and stays thin."""
