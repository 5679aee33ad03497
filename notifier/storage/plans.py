"""Storage work described once, run by the synchronous clients or the asyncio ones.

A plan is a generator: it yields each command it needs (a step, as data) and gets the
step's answer back where it yielded, so what happens between the commands is written
once. `run` executes the steps with the synchronous clients (workers, the CLI),
`run_async` with the asyncio ones (web processes): a step calls the same method on
either, and the asyncio client's call returns something to await. An error raised by a
step ends the plan there and reaches the caller. storage/writes.py's Upsert is the same
idea for writes that need no answer. Used by token revocation and the index set-up.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.synchronous.database import Database

T = TypeVar("T")
Db = Database[Any] | AsyncDatabase[Any]
Redis = redis.Redis | aioredis.Redis


@dataclass(frozen=True)
class FindOneAndUpdate:
    """Update one document; answers it as it is after the update (None when none matched)."""

    collection: str
    filter: dict[str, Any]
    update: dict[str, Any]
    projection: dict[str, Any] | None = None

    def call(self, db: Db, client: Redis | None) -> Any:
        return db[self.collection].find_one_and_update(
            self.filter,
            self.update,
            projection=self.projection,
            return_document=ReturnDocument.AFTER,
        )


@dataclass(frozen=True)
class UpdateOne:
    """Update one document."""

    collection: str
    filter: dict[str, Any]
    update: dict[str, Any]

    def call(self, db: Db, client: Redis | None) -> Any:
        return db[self.collection].update_one(self.filter, self.update)


@dataclass(frozen=True)
class Find:
    """The matching documents, as a list."""

    collection: str
    filter: dict[str, Any]
    projection: dict[str, Any] | None = None

    def call(self, db: Db, client: Redis | None) -> Any:
        return db[self.collection].find(self.filter, self.projection).to_list()


@dataclass(frozen=True)
class CreateIndex:
    """Create an index (nothing happens when it exists with these options)."""

    collection: str
    keys: list[tuple[str, int]]
    options: dict[str, Any]

    def call(self, db: Db, client: Redis | None) -> Any:
        return db[self.collection].create_index(self.keys, **self.options)


@dataclass(frozen=True)
class IndexInformation:
    """A collection's indexes, by name (each with its `key`, as a list of pairs)."""

    collection: str

    def call(self, db: Db, client: Redis | None) -> Any:
        return db[self.collection].index_information()


@dataclass(frozen=True)
class Command:
    """A database command."""

    command: dict[str, Any]

    def call(self, db: Db, client: Redis | None) -> Any:
        return db.command(self.command)


@dataclass(frozen=True)
class Eval:
    """A Lua script on Redis, with its keys and arguments."""

    script: str
    keys: tuple[str, ...]
    args: tuple[Any, ...] = ()

    def call(self, db: Db, client: Redis | None) -> Any:
        assert client is not None, "a plan that uses Redis is run with a Redis client"
        return client.eval(self.script, len(self.keys), *self.keys, *self.args)


Step = FindOneAndUpdate | UpdateOne | Find | CreateIndex | IndexInformation | Command | Eval
Plan = Generator[Step, Any, T]


def run(plan: Plan[T], db: Database[Any], client: redis.Redis | None = None) -> T:
    """Run a plan with the synchronous clients; returns what the plan returns."""
    try:
        step = next(plan)
        while True:
            step = plan.send(step.call(db, client))
    except StopIteration as done:
        return done.value


async def run_async(
    plan: Plan[T], db: AsyncDatabase[Any], client: aioredis.Redis | None = None
) -> T:
    """Run a plan with the asyncio clients; returns what the plan returns."""
    try:
        step = next(plan)
        while True:
            step = plan.send(await step.call(db, client))
    except StopIteration as done:
        return done.value
