"""``python -m boosting.map``: :func:`boosting.map.cli.main`."""

from boosting.map.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
