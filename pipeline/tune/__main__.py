"""``python -m pipeline.tune``: see ``pipeline.tune``."""

from pipeline.tune.cli import main

if __name__ == "__main__":
    main()
