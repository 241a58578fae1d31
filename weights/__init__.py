"""The shipped demo model, installed as the resource package fastrcnn_cli.weights (see setup.py)."""
