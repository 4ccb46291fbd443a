"""The hosted-provider tests' respx router (`api`), for the migration's recorded exchanges."""

from providers.conftest import api  # noqa: F401
