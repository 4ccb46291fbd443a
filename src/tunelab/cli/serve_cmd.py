"""`tunelab serve`: the OpenAI-compatible API (files, fine-tuning jobs, chat, models)."""

from __future__ import annotations

from pathlib import Path

import click

from tunelab.cli import common
from tunelab.cli.options import COUNT
from tunelab.errors import usage_error
from tunelab.providers.local.llamacpp import BACKENDS, check_backend
from tunelab.providers.resolve import check_chat_model


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--api-key",
    envvar="TUNELAB_API_KEY",
    help="Require this bearer token (env TUNELAB_API_KEY); needed off loopback.",
)
@click.option(
    "--allowed-host",
    multiple=True,
    help="Also accept requests whose Host header is this name (repeatable).",
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0, min_open=True),
    default=512,
    show_default=True,
    help="Largest file upload accepted.",
)
@click.option(
    "--max-batch-size",
    type=COUNT,
    default=8,
    show_default=True,
    help="Most chat requests answered in one batched generation.",
)
@click.option(
    "--max-adapters",
    type=COUNT,
    help="Most LoRA fine-tunes one base model holds loaded at once; past it the least "
    "recently used is unloaded (default: as many as the memory budget holds).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="torch",
    show_default=True,
    help="Who answers local models' chats: torch (the PyTorch engine), auto (llama.cpp for "
    "fine-tunes' plain chats on CPU when llama-cpp-python is installed, else PyTorch), or "
    "llamacpp.",
)
@click.option("--no-worker", is_flag=True, help="Queue jobs without starting a local worker.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="The studio's Data page may open files under it by path.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Also serve this model: a directory, Hub id or MODEL@URL (repeatable). "
    "Registry and bundled models are always served.",
)
@click.option(
    "--allow-any-model",
    is_flag=True,
    help="Let clients name any directory, Hub id or URL (trusted networks only).",
)
def serve_cmd(
    host,
    port,
    api_key,
    allowed_host,
    max_upload_mb,
    max_batch_size,
    max_adapters,
    backend,
    no_worker,
    data_dir,
    models,
    allow_any_model,
) -> int:
    """Serve OpenAI's fine-tuning and chat API for models you own under /v1, and the studio
    (the web UI) at /."""
    check_backend(backend)
    for name in models:  # a mistyped --model fails now, not at a client's first request
        check_chat_model(name)
    # loaded when this command runs: the others start without it
    import uvicorn

    # loaded when this command runs: the others start without it
    from tunelab.server.app import ServerConfig, create_app, is_loopback, listening_socket

    if not is_loopback(host) and not api_key:
        raise usage_error(
            "api_key_required",
            f"--host {host} is reachable from other machines; an API key is required.",
            hint="pass --api-key or set TUNELAB_API_KEY (clients send it as their api_key)",
        )
    sock = listening_socket(host, port)  # a busy port fails here, before the lines below
    port = sock.getsockname()[1]  # the one the system chose for --port 0
    config = ServerConfig(
        host=host,
        port=port,
        api_key=api_key,
        allowed_hosts=tuple(allowed_host),
        max_upload_bytes=int(max_upload_mb * 1024 * 1024),
        start_worker=not no_worker,
        max_batch_size=max_batch_size,
        max_adapters=max_adapters,
        backend=backend,
        data_dir=data_dir.resolve() if data_dir else None,
        models=tuple(models),
        allow_any_model=allow_any_model,
    )
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/v1"
    common.stderr.print(
        f"tunelab API on {where}  (OpenAI(base_url={where!r}, api_key=...))", highlight=False
    )
    common.stderr.print(f"tunelab studio on {where.removesuffix('/v1')}/", highlight=False)
    served = uvicorn.Config(
        create_app(config), host=host, port=port, log_level="info", access_log=True
    )
    with sock:
        uvicorn.Server(served).run(sockets=[sock])
    return 0
