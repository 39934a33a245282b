"""Start MLServer on a model folder, with uvicorn's HTTP parser chosen: ``python mlserver_launch.py h11|httptools DIR``.

MLServer leaves the choice to uvicorn's "auto", which takes httptools when it can be imported. ``pip install
mlserver`` does not bring httptools, so its default is h11: "h11" hides httptools (installed in the same
environment for the tuned run) to start MLServer as installed.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    parser, folder = sys.argv[1], sys.argv[2]
    if parser == "h11":
        sys.modules["httptools"] = None  # type: ignore[assignment]  # import httptools now raises ImportError
    from mlserver.cli.main import main

    sys.argv = ["mlserver", "start", folder]
    main()
