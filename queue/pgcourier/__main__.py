"""`python -m pgcourier`: the command line, see pgcourier.cli."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
