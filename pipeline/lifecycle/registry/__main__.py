"""``python -m pipeline.lifecycle.registry``: see pipeline.lifecycle.registry.cli."""

from pipeline.lifecycle.registry.cli import main

main()
