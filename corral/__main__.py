"""``python -m corral``: the same command line as the ``corral`` script (the auto-started server runs this way)."""

from corral.cli.main import main

if __name__ == "__main__":
    main()
