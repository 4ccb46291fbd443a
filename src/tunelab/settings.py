"""Where tunelab keeps its state, and how it reads configuration.

`TUNELAB_HOME` (default: the per-user data directory, e.g. ~/.local/share/tunelab) holds the
registry, cached model conversions and artefacts. A `.env` file in the working directory (or
a parent) is loaded once, without overriding variables already set, as the seeds do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from dotenv import find_dotenv, load_dotenv

from tunelab.errors import TunelabError
from tunelab.io import can_create

_dotenv_loaded = False


def load_env() -> None:
    """Load `.env` from the working directory or its parents, once per process."""
    global _dotenv_loaded
    if not _dotenv_loaded:
        path = find_dotenv(usecwd=True)
        if path:
            load_dotenv(path, override=False)
        _dotenv_loaded = True


@dataclass(frozen=True)
class Settings:
    home: Path

    @property
    def models_dir(self) -> Path:
        """Converted base models (e.g. the bundled GGUF as a Hugging Face directory)."""
        return self.home / "models"

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.db"

    @property
    def database_url(self) -> str | None:
        """`TUNELAB_DATABASE_URL`: a PostgreSQL registry shared by several machines."""
        return os.environ.get("TUNELAB_DATABASE_URL", "").strip() or None

    @property
    def artifacts_url(self) -> str | None:
        """`TUNELAB_ARTIFACTS`: a directory or fsspec URL where jobs' files and outputs are
        shared between machines (`tunelab.artifacts`); unset, they stay in TUNELAB_HOME."""
        return os.environ.get("TUNELAB_ARTIFACTS", "").strip() or None


def get_settings() -> Settings:
    """Current settings, read from the environment (and `.env`) on every call."""
    load_env()
    home = os.environ.get("TUNELAB_HOME") or platformdirs.user_data_dir("tunelab")
    return Settings(home=Path(home).expanduser())


def writable_home(purpose: str) -> Path:
    """TUNELAB_HOME, after checking that it can be written (`purpose` says what for)."""

    home = get_settings().home
    if not can_create(home):
        raise TunelabError(
            "home_read_only",
            f"TUNELAB_HOME ({home}) is read-only or not writable; it is needed to {purpose}.",
            hint="export TUNELAB_HOME=/a/writable/directory, or make this one writable",
        )
    return home


def get_secret(name: str, purpose: str) -> str:
    """An API key from the environment or `.env`; a missing key names the variable.

    The value is never included in any message.
    """
    load_env()
    value = os.environ.get(name, "").strip()
    if not value:
        raise TunelabError(
            "missing_api_key",
            f"{name} is not set; it is needed to {purpose}.",
            hint=f"export {name}=... or add it to a .env file in this directory",
        )
    return value
