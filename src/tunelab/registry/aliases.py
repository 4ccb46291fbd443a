"""Model aliases in the registry: a name that answers as another model. Mixed into `Store`,
whose database it queries; which names may be aliased, and to what, is decided above
(`tunelab.providers.models`)."""

from __future__ import annotations

import time

from sqlalchemy import delete, select

from tunelab.registry.database import Database
from tunelab.registry.records import ModelAlias, not_found
from tunelab.registry.schema import model_aliases


class ModelAliases:
    """The store's model aliases."""

    _db: Database

    def put_alias(self, alias: str, target: str) -> ModelAlias:
        """Make `alias` answer as `target` (an alias given again points to the new target)."""
        row = {"alias": alias, "target": target, "created_at": int(time.time())}
        with self._db.write() as db:
            db.execute(self._db.upsert(model_aliases, key=("alias",)), row)
        return ModelAlias.from_row(row)

    def find_alias(self, alias: str) -> ModelAlias | None:
        query = select(model_aliases).where(model_aliases.c.alias == alias)
        row = self._db.execute(query).mappings().first()
        return ModelAlias.from_row(row) if row is not None else None

    def list_aliases(self) -> list[ModelAlias]:
        """Newest first."""
        newest_first = (model_aliases.c.created_at.desc(), model_aliases.c.alias)
        query = select(model_aliases).order_by(*newest_first)
        return [ModelAlias.from_row(row) for row in self._db.execute(query).mappings()]

    def delete_alias(self, alias: str) -> ModelAlias:
        found = self.find_alias(alias)
        if found is None:
            raise not_found("alias", alias)
        with self._db.write() as db:
            db.execute(delete(model_aliases).where(model_aliases.c.alias == alias))
        return found
