"""Make the documentation's screenshots with headless Chromium, never by hand.

    python docs/screenshots.py --workspace PATH                   # DVC plots of a workspace where `dvc repro` ran
    python docs/screenshots.py --prefect                          # the Prefect UI of a temporary server
    python docs/screenshots.py --evidently-url http://127.0.0.1:8001   # an Evidently UI already running
    python docs/screenshots.py --workspace . --prefect --evidently-url URL   # all three

Each image goes to ``docs/img/`` (``--out``): ``dvc-plots.png``, ``prefect-ui.png``, ``evidently-ui.png``; the
pages that show them (``<!-- evergreen:screenshot NAME.png | caption -->``) say how to make them while they are
absent, so the site builds either way. Each is saved as a 256-colour PNG (about 30 kB), small enough to commit:
re-run the script when a UI or the plots change, and commit what it wrote.

- DVC plots: ``dvc plots show -o <temporary folder>`` in the workspace (its plot files are read, nothing in it
  is written but DVC's own ``.dvc/tmp``); the page inlines vega (``dvc_plots/template.html``), so it renders offline.
- Prefect: ``flows.stack.Stack(...).start_server()`` on a free loopback port with a temporary PREFECT_HOME
  (telemetry off), the dashboard captured, then ``down()``.
- Evidently: the URL given (``evergreen monitor ui`` serves one on the drift monitor's workspace).

Chromium runs with a fresh profile and no background networking, in a process group of its own that is
killed if it outlives its timeout. ``--virtual-time-budget`` lets a single-page app fetch its data and render
before the capture.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("screenshots")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def find_chromium(given: str | None) -> str:
    found = given or next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    if not found:
        raise SystemExit(f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)}); install it or pass --chromium PATH")
    return found


def capture(chromium: str, url: str, out: Path, size: tuple[int, int], settle_ms: int, timeout: float = 120.0) -> Path:
    """One screenshot of ``url`` into ``out``, in a fresh profile; the browser's process group ends with it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="evergreen-chromium-") as profile:
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={settle_ms}",
            f"--screenshot={out}",
            url,
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise RuntimeError(f"Chromium took over {timeout:.0f} s on {url}") from None
        finally:
            _kill_group(process.pid)
    if process.returncode != 0 or not out.is_file():
        raise RuntimeError(f"Chromium failed on {url} (exit {process.returncode}): {stderr.decode(errors='replace')[-1000:]}")
    shrink(out)
    log.info("%s: %s (%d kB)", url, out, out.stat().st_size // 1024)
    return out


def _kill_group(pid: int) -> None:
    """Chromium's helpers (zygote, renderers) share its process group; none may outlive the capture."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def shrink(path: Path) -> None:
    """A palette PNG (256 colours) is a third of the size and looks the same for a UI; skipped without Pillow."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def dvc_plots(workspace: Path, chromium: str, out: Path, size: tuple[int, int]) -> Path:
    """``dvc plots show`` of a workspace that has run the pipeline, rendered into a temporary folder."""
    dvc = Path(sys.executable).with_name("dvc")
    if not dvc.exists():
        dvc = Path(shutil.which("dvc") or "dvc")
    with tempfile.TemporaryDirectory(prefix="evergreen-plots-") as folder:
        env = {
            **os.environ,
            "DVC_NO_ANALYTICS": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        result = subprocess.run(
            [str(dvc), "plots", "show", "-o", folder], cwd=workspace, env=env, capture_output=True, text=True, timeout=300
        )
        page = Path(folder) / "index.html"
        if result.returncode != 0 or not page.is_file():
            raise RuntimeError(
                f"dvc plots show in {workspace} failed (has the pipeline run there?): {(result.stdout + result.stderr)[-1500:]}"
            )
        return capture(chromium, page.as_uri(), out, size, settle_ms=10_000)


def prefect_ui(chromium: str, out: Path, size: tuple[int, int]) -> Path:
    """The Prefect UI of a temporary server (its own home, a free port), stopped afterwards."""
    os.environ.update(TELEMETRY_OFF)
    sys.path.insert(0, str(ROOT))
    from flows.stack import Stack, free_port

    with tempfile.TemporaryDirectory(prefix="evergreen-prefect-") as home:
        stack = Stack(root=ROOT, home=Path(home), port=free_port())
        try:
            stack.start_server()
            return capture(chromium, f"{stack.ui_url}/dashboard", out, size, settle_ms=15_000)
        finally:
            stack.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/screenshots.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, help="a workspace where `dvc repro` ran: capture its `dvc plots show` page")
    parser.add_argument("--prefect", action="store_true", help="start a temporary Prefect server and capture its UI")
    parser.add_argument("--evidently-url", help="capture the Evidently UI at this URL (e.g. from `evergreen monitor ui`)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder for the images (default: docs/img)")
    parser.add_argument("--chromium", help="the browser binary (default: chromium on PATH)")
    parser.add_argument("--size", default="1400x900", help="window size WIDTHxHEIGHT (default: 1400x900)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.workspace or args.prefect or args.evidently_url):
        parser.error("nothing to capture: give --workspace, --prefect and/or --evidently-url")
    width, _, height = args.size.partition("x")
    size = (int(width), int(height))
    chromium = find_chromium(args.chromium)
    failed = 0
    jobs = []
    if args.workspace:
        jobs.append(("DVC plots", lambda: dvc_plots(args.workspace.resolve(), chromium, args.out / "dvc-plots.png", size)))
    if args.prefect:
        jobs.append(("Prefect UI", lambda: prefect_ui(chromium, args.out / "prefect-ui.png", size)))
    if args.evidently_url:
        jobs.append(
            ("Evidently UI", lambda: capture(chromium, args.evidently_url, args.out / "evidently-ui.png", size, 15_000))
        )
    for name, job in jobs:
        try:
            job()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            failed += 1
            log.error("%s: %s", name, exc)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
