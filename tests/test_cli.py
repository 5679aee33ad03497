"""`python -m notifier`: the release step, users, price imports, deal checks and stats."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from notifier.accounts.auth import verify_password
from notifier.shopping.watchlist import WatchInput, watch
from notifier.storage.writes import apply
from tests.conftest import ROOT


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def cli_env(env: dict[str, str]) -> dict[str, str]:
    import os

    return {**os.environ, **env}


def test_release_step_creates_indexes_and_runs_each_migration_once(cli_env, mongo_server):
    assert (ROOT / "Procfile").read_text().startswith("release: python -m notifier migrate\n")
    name = f"notifier_migrate_{uuid.uuid4().hex[:8]}"
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.url)
    db = client[name]
    try:
        # Notifications stored before the seq counters existed.
        db.notifications.insert_many(
            [
                {"user_id": "u1", "seq": s, "type": "system-message", "read": False, "data": {}}
                for s in (1, 2, 3)
            ]
            + [{"user_id": "u2", "seq": 1, "type": "system-message", "read": False, "data": {}}]
        )
        # A price stored before known items existed (issue 20 #4).
        db.prices.insert_one(
            {"store_id": "s", "item_key": "oats 1kg", "item_name": "Oats 1kg", "updated_at": None}
        )
        env = {**cli_env, "MONGODB_URI": f"{mongo_server.url}/{name}"}
        first = run(env, "migrate")
        assert first.returncode == 0, first.stderr
        assert "backfill notification counters (2 changed)" in first.stdout
        assert "build user state documents by recount (2 changed)" in first.stdout
        assert "summarise the price history by store and day (0 changed)" in first.stdout
        assert "make every priced item known (the watch form's suggestions) (1 changed)" in (
            first.stdout
        )
        assert "list flagged unpublished notifications in the outbox (0 changed)" in first.stdout
        assert db["items"].find_one({"_id": "oats 1kg"})["name"] == "Oats 1kg"
        assert db.user_state.find_one({"_id": "u1"}) == {"_id": "u1", "seq": 3, "unread": 3}
        assert db.user_state.find_one({"_id": "u2"}) == {"_id": "u2", "seq": 1, "unread": 1}
        assert db.counters.find_one({"_id": "notifications:u1"})["seq"] == 3
        assert db.counters.find_one({"_id": "notifications:u2"})["seq"] == 1
        assert "username_1" in db.users.index_information()
        db.counters.update_one({"_id": "notifications:u1"}, {"$set": {"seq": 7}})
        second = run(env, "migrate")
        assert second.returncode == 0 and "migrations run: none pending" in second.stdout
        assert db.counters.find_one({"_id": "notifications:u1"})["seq"] == 7  # not run again
        assert [m["_id"] for m in db.migrations.find()] == [1, 2, 3, 4, 5]
    finally:
        client.drop_database(name)
        client.close()


def test_repair_counts_rebuilds_each_users_state_from_the_notifications(cli_env, mongo_server):
    name = f"notifier_repair_{uuid.uuid4().hex[:8]}"
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.url)
    db = client[name]
    try:
        seen = datetime(2026, 1, 2, tzinfo=UTC)
        quiet = db.users.insert_one({"username": "quiet", "announcements_seen_at": seen})
        quiet_id = str(quiet.inserted_id)
        db.notifications.insert_many(
            [
                {"user_id": "u1", "seq": s, "type": "system-message", "read": s == 2, "data": {}}
                for s in (1, 2, 3, 4)
            ]
        )
        # Wrong in every way a crash or an old writer could leave it, and one for u2 whose
        # notifications are gone.
        db.user_state.insert_one({"_id": "u1", "seq": 2, "unread": 40})
        db.user_state.insert_one({"_id": "u2", "seq": 9, "unread": -3})
        env = {**cli_env, "MONGODB_URI": f"{mongo_server.url}/{name}"}
        only = run(env, "repair-counts", "--user", "u2")
        assert only.returncode == 0, only.stderr
        assert "recounted the state of 1 user(s)" in only.stdout
        assert db.user_state.find_one({"_id": "u1"})["unread"] == 40  # not asked for
        result = run(env, "repair-counts")
        assert result.returncode == 0, result.stderr
        assert "recounted the state of 3 user(s)" in result.stdout  # u1, u2 and quiet
        assert db.user_state.find_one({"_id": "u1"}) == {"_id": "u1", "seq": 4, "unread": 3}
        assert db.user_state.find_one({"_id": "u2"}) == {"_id": "u2", "seq": 0, "unread": 0}
        state = db.user_state.find_one({"_id": quiet_id})
        assert (state["seq"], state["unread"]) == (0, 0)
        assert state["announcements_seen_at"].replace(tzinfo=UTC) == seen
    finally:
        client.drop_database(name)
        client.close()


def test_create_user_reads_the_password_from_stdin_and_refuses_duplicates(cli_env, db):
    username = f"ops-{uuid.uuid4().hex[:8]}"
    made = run(
        cli_env,
        "create-user",
        username,
        "--role",
        "admin",
        "--email",
        "ops@example.test",
        "--password-stdin",
        stdin="a-long-password\n",
    )
    assert made.returncode == 0, made.stderr
    user = db.users.find_one({"username": username})
    assert user["role"] == "admin" and user["email"] == "ops@example.test"
    assert verify_password("a-long-password", user["password_hash"])
    assert "a-long-password" not in made.stdout + made.stderr

    again = run(cli_env, "create-user", username, "--password-stdin", stdin="another-password\n")
    assert again.returncode == 1
    assert again.stderr.strip() == f"notifier: a user named {username!r} already exists"
    short = run(cli_env, "create-user", username + "x", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    assert db.users.find_one({"username": username + "x"}) is None
    usage = run(cli_env, "create-user", username + "y", "--role", "emperor")
    assert usage.returncode == 2


def test_import_prices_then_check_deals_notifies_once(cli_env, db, alice, item, tmp_path: Path):
    apply(db, [watch(alice.user_id, WatchInput.parse({"item_name": item}))])
    csv = tmp_path / "prices.csv"
    csv.write_text(
        "store_name,item_name,price_in_cents,regular_price_in_cents\n"
        f"CLI Mart,{item},150,300\n"
        f"CLI Mart,{item} other,abc,300\n"
    )
    imported = run(cli_env, "import-prices", str(csv), "--no-check")
    assert imported.returncode == 1  # one row was rejected
    assert "1 row(s) applied, 1 rejected" in imported.stdout
    assert "line 3: The price must be a whole number of cents" in imported.stderr
    assert '(column price_in_cents: "abc")' in imported.stderr
    assert db.prices.find_one({"item_name": item})["price_in_cents"] == 150
    assert db.notifications.count_documents({"user_id": alice.user_id}) == 0

    checked = run(cli_env, "check-deals", "--item", item)
    assert checked.returncode == 0, checked.stderr
    assert "1 new deal(s) for 1 user(s)" in checked.stdout
    again = run(cli_env, "check-deals", "--item", item)
    assert "0 new deal(s) for 0 user(s)" in again.stdout
    note = db.notifications.find_one({"user_id": alice.user_id})
    assert note["type"] == "deal-notification" and note["data"]["deals"][0]["item_name"] == item

    missing = run(cli_env, "import-prices", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("name,price\nx,1\n")
    unusable = run(cli_env, "import-prices", str(bad))
    assert unusable.returncode == 1 and "the CSV header must name" in unusable.stderr


def test_stats_prints_counts_as_json(cli_env, db, alice):
    db.notifications.insert_one(
        {"user_id": alice.user_id, "seq": 1, "type": "system-message", "read": False, "data": {}}
    )
    result = run(cli_env, "stats")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["users"] >= 1 and figures["notifications"] >= 1 and figures["unread"] >= 1
    assert {"outbox", "emails_pending", "connections", "web_processes", "processes"} <= set(figures)


def test_commands_say_what_is_unreachable(cli_env):
    down = run({**cli_env, "MONGODB_URI": "mongodb://127.0.0.1:1/x"}, "stats")
    assert down.returncode == 1 and down.stderr.startswith("notifier: MongoDB is unavailable")
    assert run(cli_env).returncode == 2  # no command


def test_deploy_files_describe_the_service():
    assert (ROOT / ".python-version").read_text().strip() == "3.11"
    app = json.loads((ROOT / "app.json").read_text())
    assert set(app["formation"]) == {"web", "worker", "beat"}
    assert app["formation"]["beat"]["quantity"] == 1
    assert app["env"]["JWT_SECRET"]["generator"] == "secret"
    assert app["env"]["MONGODB_URI"]["required"] is True
    assert any(a["plan"].startswith("heroku-redis") for a in app["addons"])
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines())
    assert set(procfile) == {"release", "web", "worker", "beat"}
