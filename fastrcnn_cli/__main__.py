"""``python -m fastrcnn_cli`` runs the command line."""

from fastrcnn_cli.cli import main

if __name__ == "__main__":
    main()
