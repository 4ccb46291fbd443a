"""`tunelab ui`: open the studio in a browser, starting `tunelab serve` first when needed."""

from __future__ import annotations

import subprocess
import sys
import time
import webbrowser
from pathlib import Path

import click
import httpx

from tunelab.cli import common
from tunelab.errors import TunelabError, usage_error
from tunelab.settings import get_settings

READY_SECONDS = 120.0


@click.command("ui")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Let the Data page open files under this directory by path.",
)
@click.option("--no-browser", is_flag=True, help="Only print the address.")
def ui_cmd(port: int, data_dir: Path | None, no_browser: bool) -> int:
    """Open tunelab studio (the web UI) on this machine, starting the server if needed.

    The server binds 127.0.0.1 and keeps running after this command (its log is
    TUNELAB_HOME/logs/serve.log). To reach the studio from other machines, run
    `tunelab serve --host 0.0.0.0 --api-key ...` yourself (see the README).
    """
    url = f"http://127.0.0.1:{port}/"
    if not _is_tunelab(url):
        _start_server(port, data_dir)
        _wait_ready(url)
    opened = not no_browser and webbrowser.open(url)
    common.stderr.print(
        f"tunelab studio: {url}" + ("" if opened else "  (open it in a browser)"), highlight=False
    )
    return 0


def _is_tunelab(url: str) -> bool:
    try:
        answer = httpx.get(url + "health", timeout=2)
    except httpx.TransportError:
        return False
    if answer.status_code != 200 or answer.json().get("status") != "ok":
        raise usage_error(
            "port_in_use",
            f"something other than tunelab answers on {url}.",
            hint="choose another --port",
        )
    return True


def _start_server(port: int, data_dir: Path | None) -> None:
    logs = get_settings().home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tunelab", "serve", "--port", str(port)]
    if data_dir is not None:
        command += ["--data-dir", str(data_dir.resolve())]
    with (logs / "serve.log").open("ab") as log:
        subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    raise TunelabError(
        "server_not_ready",
        f"the server did not answer on {url}.",
        hint=f"see {get_settings().home / 'logs' / 'serve.log'}",
    )
