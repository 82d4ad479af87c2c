"""Template versions from the store: a plain load only reads; the shipped files are recorded once."""
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from app.store import Store
from app.templates import load_template, promote_template, save_template
from prompts.template import TemplateError, shipped_template_body, shipped_template_names


@contextmanager
def write_transactions():
    """Every BEGIN IMMEDIATE (how the store opens a write) issued while the block runs, on any database."""
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        if statement.startswith("BEGIN IMMEDIATE"):
            seen.append(statement)

    event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(sa.engine.Engine, "before_cursor_execute", record)


def test_a_template_load_opens_no_write_transaction(tmp_path):
    with write_transactions() as first:
        store = Store(tmp_path / "reason.db")
        assert load_template(store, "cot").version == 1
    assert first  # a blank database: migrated, and the shipped templates recorded
    with write_transactions() as writes:
        for spec in ("cot", "cot@1", "pal", "react", "direct"):
            load_template(store, spec)
        reopened = Store(store.path)  # a store over a database already set up neither migrates nor syncs again
        load_template(reopened, "cot")
    assert writes == []
    assert [v["version"] for v in store.template_versions("cot")] == [1]


def test_each_shipped_template_is_recorded_once_and_edits_come_after(tmp_path):
    store = Store(tmp_path / "reason.db")
    assert save_template(store, "cot", shipped_template_body("cot").replace("version: 1", "version: 2")) == 2
    for _ in range(2):
        load_template(store, "pal")
    assert {name: [v["version"] for v in store.template_versions(name)] for name in shipped_template_names()} == {
        name: [1, 2] if name == "cot" else [1] for name in shipped_template_names()}
    assert load_template(store, "cot@2").version == 2 and load_template(store, "cot@1").version == 1


def test_saving_leaves_the_default_and_promoting_changes_it(tmp_path):
    store = Store(tmp_path / "reason.db")
    body = shipped_template_body("cot") + "\n# shorter\n"
    assert save_template(store, "cot", body) == 2 and save_template(store, "cot", body) == 3
    assert "version: 3" in store.get_template("cot", 3) and "version: 1" not in store.get_template("cot", 3)
    assert load_template(store, "cot").version == 1  # saving never changes what runs
    assert promote_template(store, "cot@2") == ("cot", 2)
    assert load_template(store, "cot").version == 2 and load_template(store, "cot@3").version == 3
    with pytest.raises(TemplateError, match="no version 7"):
        promote_template(store, "cot@7")
    with pytest.raises(TemplateError, match="name the version"):
        promote_template(store, "cot")


def test_a_database_with_saved_edits_keeps_running_its_newest_after_the_upgrade(tmp_path):
    from app.store.database import Database
    from app.store.migrations import MIGRATIONS, _apply_once

    old = Database(tmp_path / "reason.db")
    with old.writer.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at DATETIME)")
    for name, migration in MIGRATIONS[:3]:
        _apply_once(old, name, migration)
    with old.writer.begin() as conn:
        for version in (1, 2):
            conn.exec_driver_sql("INSERT INTO prompt_template (name, version, body, created_at) VALUES "
                                 "('cot', ?, ?, '2026-01-01')", (version, shipped_template_body("cot")))
    old.close()
    assert load_template(Store(tmp_path / "reason.db"), "cot").version == 2
