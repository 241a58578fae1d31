"""The example images, installed as the resource package fastrcnn_cli.examples (see setup.py)."""
