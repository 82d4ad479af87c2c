"""The trace store: migrations, concurrent writers, crash-honest runs, search, batches, templates, export."""
import ast
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from app.settings import Settings
from app.store import MIGRATIONS, RUN_STATUSES, Store, fts_query
from app.store.models import Batch, PromptTemplate, Run, TemplateDefault
from app.store.models import Step as StepRow
from prompts.trace import Step, Trace

MODELS = (Run, StepRow, PromptTemplate, Batch, TemplateDefault)
UNMAPPED = {"run": {"seq"}}  # run.seq: a stable rowid for the FTS index, deliberately not in the Run model
NOT_MODELLED = ("_migrations", "run_fts")  # the migrations' own record, and the FTS index with its shadow tables


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "home" / "reason.db")
    yield store
    store.close()


def make_trace(question, strategy="cot", answer="42", n_steps=3, error=None, tokens=(10, 5)) -> Trace:
    trace = Trace(question=question, strategy=strategy, template_name=strategy, template_version=1,
                  model_id="tiny", backend="ours", sampling={"temperature": 0.0})
    for i in range(n_steps):
        trace.add(Step(kind="llm" if i % 2 == 0 else "tool", input=f"in {i}", output=f"out {i}", name=f"s{i}",
                       prompt_tokens=tokens[0], completion_tokens=tokens[1], duration_ms=1.5, meta={"i": i}))
    trace.counters = {"bad_calls": 1}
    return trace.finish(answer, error=error)


def record(store, question, strategy="cot", answer="42", correct=None, **start) -> str:
    run_id = store.start_run(question, strategy, **start)
    store.finish_run(run_id, make_trace(question, strategy, answer), correct=correct)
    return run_id


def db(store) -> sqlite3.Connection:
    return sqlite3.connect(store.path)


def assert_search_index_matches_runs(store):
    with db(store) as conn:  # raises if the external-content FTS index disagrees with the run table
        conn.execute("INSERT INTO run_fts (run_fts, rank) VALUES ('integrity-check', 1)")


# --- migrations


def applied(store) -> list[str]:
    with db(store) as conn:
        return [name for (name,) in conn.execute("SELECT name FROM _migrations ORDER BY rowid")]


def test_a_blank_database_migrates_with_wal_and_the_search_index(tmp_path):
    store = Store.open(Settings(home=tmp_path / "new" / "home", model_path=None, device="cpu", dtype=None))
    assert store.path == tmp_path / "new" / "home" / "reason.db" and store.path.exists()
    assert applied(store) == [name for name, _ in MIGRATIONS]
    assert applied(store)[:4] == ["001_initial", "002_run_fts", "003_run_status_stopped", "004_template_default"]
    with db(store) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'run_fts'").fetchone()[0] == 1
    store.close()


def _sql_default(text: str | None):
    return None if text is None else ast.literal_eval(text)  # '' / 'running' / 0 / '{}' as SQL writes them


def migrated_schema(inspector, conn: sqlite3.Connection, table: str) -> dict:
    """Columns (type, nullable, default), keys, foreign keys and indexes of a table as the migrations made it."""
    hidden = UNMAPPED.get(table, set())
    columns = {c["name"]: (c["type"].python_type, bool(c["nullable"]) and not c["primary_key"], _sql_default(c["default"]))
               for c in inspector.get_columns(table) if c["name"] not in hidden}
    keys = {frozenset(inspector.get_pk_constraint(table)["constrained_columns"]),
            *(frozenset(u["column_names"]) for u in inspector.get_unique_constraints(table))}
    # SQLAlchemy's reflection misses ON DELETE SET NULL; SQLite's own list has every action
    foreign = {((column,), target, (target_column,), on_delete)
               for _, _, target, column, target_column, _, on_delete, _ in conn.execute(f"PRAGMA foreign_key_list({table})")}
    indexes = {i["name"]: (tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)}
    return {"columns": columns, "keys": {k for k in keys if not k & hidden}, "foreign_keys": foreign, "indexes": indexes}


def model_schema(model) -> dict:
    """The same, as the SQLModel class declares it (a required field has no default)."""
    table, fields = model.__table__, model.model_fields
    columns = {c.name: (getattr(c.type, "impl", c.type).python_type, bool(c.nullable) and not c.primary_key,
                        None if fields[c.name].is_required() else fields[c.name].default) for c in table.columns}
    keys = {frozenset(c.name for c in table.primary_key.columns),
            *(frozenset(c.name for c in u.columns) for u in table.constraints if isinstance(u, sa.UniqueConstraint))}
    foreign = {((fk.parent.name,), fk.column.table.name, (fk.column.name,), fk.ondelete or "NO ACTION")
               for fk in table.foreign_keys}
    indexes = {i.name: (tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes}
    return {"columns": columns, "keys": keys, "foreign_keys": foreign, "indexes": indexes}


def test_the_models_equal_the_migrated_tables(store):
    inspector = sa.inspect(store.engine)
    tables = {t for t in inspector.get_table_names() if not t.startswith(NOT_MODELLED)}
    assert tables == {model.__tablename__ for model in MODELS}
    with db(store) as conn:
        for model in MODELS:
            assert model_schema(model) == migrated_schema(inspector, conn, model.__tablename__), model.__tablename__
    assert "seq" in {c["name"] for c in inspector.get_columns("run")}  # the one column left out, and it exists


def test_the_status_check_allows_exactly_the_run_statuses(store):
    run_id = store.start_run("status?", "cot")
    with db(store) as conn:
        for status in RUN_STATUSES:
            conn.execute("UPDATE run SET status = ? WHERE id = ?", (status, run_id))
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE run SET status = 'exploded' WHERE id = ?", (run_id,))


def test_the_stopped_status_migration_keeps_runs_steps_search_and_cascades(tmp_path):
    """A database made before `stopped` existed: the run table is rebuilt without losing anything."""
    from app.store.database import Database
    from app.store.migrations import _apply_once

    old = Database(tmp_path / "old.db")
    for name, migration in MIGRATIONS[:2]:
        with old.writer.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at DATETIME)")
        _apply_once(old, name, migration)
    old.close()
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("INSERT INTO run (id, created_at, strategy, question, answer, status) "
                     "VALUES ('r1', '2026-01-01', 'cot', 'How many zebras?', '12', 'ok')")
        conn.execute("INSERT INTO step (run_id, idx, kind) VALUES ('r1', 0, 'llm')")
    store = Store(tmp_path / "old.db")
    assert store.get_run("r1")["steps"][0]["kind"] == "llm"  # dropping the old table cascaded nothing
    assert [r["id"] for r in store.search_runs(text="zebras")] == ["r1"]
    with store.writer.connect() as conn:  # the migration's pooled connection has its foreign keys back on
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with db(store) as conn:
        conn.execute("UPDATE run SET status = 'stopped' WHERE id = 'r1'")
    assert store.delete_run("r1") and store.search_runs(text="zebras") == []
    with db(store) as conn:
        assert conn.execute("SELECT count(*) FROM step").fetchone()[0] == 0  # the cascade still holds
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'run'")}
    assert {"ix_run_created_at", "run_fts_insert", "run_fts_delete", "run_fts_update"} <= indexes
    store.close()


def test_connections_use_busy_timeout_and_normal_sync(store):
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_opening_again_applies_nothing_twice(store):
    run_id = record(store, "kept across reopening?")
    with db(store) as conn:
        before = conn.execute("SELECT name, applied_at FROM _migrations ORDER BY rowid").fetchall()
    again = Store(store.path)
    with db(again) as conn:
        after = conn.execute("SELECT name, applied_at FROM _migrations ORDER BY rowid").fetchall()
    assert after == before and len(after) == len(MIGRATIONS)
    assert again.get_run(run_id)["question"] == "kept across reopening?"
    again.close()


# --- concurrency and crash honesty


def test_many_threads_writing_at_once_lose_nothing(store):
    def worker(w):
        ids = []
        for i in range(25):
            run_id = store.start_run(f"worker {w} question {i}", "cot", template_name="cot", template_version=1)
            store.finish_run(run_id, make_trace(f"worker {w} question {i}", n_steps=3), correct=i % 2 == 0)
            ids.append(run_id)
        return ids

    with ThreadPoolExecutor(8) as pool:
        ids = [run_id for chunk in pool.map(worker, range(8)) for run_id in chunk]
    assert len(set(ids)) == 200
    with db(store) as conn:
        assert conn.execute("SELECT count(*) FROM run WHERE status = 'ok'").fetchone()[0] == 200
        assert conn.execute("SELECT count(*) FROM step").fetchone()[0] == 600
        assert conn.execute("SELECT count(DISTINCT run_id) FROM step").fetchone()[0] == 200
    assert len(store.search_runs("worker question", limit=None)) == 200
    assert_search_index_matches_runs(store)


def test_a_crash_leaves_a_running_run_that_resume_sees_and_can_finish(store):
    batch_id = store.create_batch("qs.jsonl", "h", ["cot"], {"device": "cpu"}, total=2)
    done_id = record(store, "finished one", batch_id=batch_id, question_id="q1", correct=True)
    crashed = store.start_run("crashed one", "cot", batch_id=batch_id, question_id="q2")
    # Simulate the process dying: a fresh store on the same file sees the honest record.
    reopened = Store(store.path)
    assert reopened.get_run(crashed)["status"] == "running"
    assert reopened.get_run(crashed)["steps"] == []
    assert reopened.finished_question_ids(batch_id, "cot") == {"q1"}
    assert reopened.unfinished_runs(batch_id, "cot") == {"q2": crashed}
    assert reopened.update_batch_counts(batch_id)["done"] == 1
    reopened.finish_run(crashed, make_trace("crashed one", answer="7"), correct=False)
    assert reopened.get_run(crashed)["status"] == "ok"
    assert reopened.finished_question_ids(batch_id, "cot") == {"q1", "q2"}
    assert reopened.get_run(done_id)["correct"] is True
    reopened.close()


def test_fail_run_records_the_error(store):
    run_id = store.start_run("will crash", "pal")
    store.fail_run(run_id, "RuntimeError: sandbox died")
    run = store.get_run(run_id)
    assert run["status"] == "error" and run["error"] == "RuntimeError: sandbox died"
    assert run["duration_ms"] >= 0
    with pytest.raises(KeyError):
        store.fail_run("nope", "x")


def test_finishing_twice_replaces_the_steps(store):
    run_id = record(store, "again")
    store.finish_run(run_id, make_trace("again", n_steps=2))
    assert [s["idx"] for s in store.get_run(run_id)["steps"]] == [0, 1]


# --- reading back


def test_get_run_has_the_trace_fields_and_steps_in_order(store):
    run_id = store.start_run("What is 6 * 7?", "cot", expected="42", model_id="tiny", sampling={"top_p": 0.9})
    trace = make_trace("What is 6 * 7?", n_steps=4)
    store.finish_run(run_id, trace, correct=True)
    run = store.get_run(run_id)
    assert (run["answer"], run["status"], run["correct"], run["expected"]) == ("42", "ok", True, "42")
    tokens = (run["prompt_tokens"], run["completion_tokens"])
    assert tokens == (trace.prompt_tokens, trace.completion_tokens) == (40, 20)
    assert run["sampling"] == {"temperature": 0.0} and run["counters"] == {"bad_calls": 1}
    assert run["created_at"].endswith("+00:00")
    assert [(s["idx"], s["kind"], s["input"], s["meta"].pop("started_at") > 0, s["meta"]) for s in run["steps"]] == [
        (i, "llm" if i % 2 == 0 else "tool", f"in {i}", True, {"i": i}) for i in range(4)]
    assert store.get_run("missing") is None


def test_search_runs_without_filters_is_newest_first_with_paging(store):
    ids = [record(store, f"q{i}") for i in range(5)]
    assert [r["id"] for r in store.search_runs(limit=3)] == ids[::-1][:3]
    assert [r["id"] for r in store.search_runs(limit=3, offset=3)] == ids[::-1][3:]
    assert "steps" not in store.search_runs(limit=1)[0]


@pytest.mark.parametrize("text", ['"unbalanced', "photo*", "(paren OR", "NEAR(a b", "a AND", "col:umn", "^x-y+z"])
def test_search_text_with_fts_syntax_never_errors(store, text):
    record(store, "photosynthesis in plants")
    assert isinstance(store.search_runs(text), list)


def test_search_matches_questions_and_answers_by_words_and_prefixes(store):
    plants = record(store, "How does photosynthesis work?", answer="light → sugar")
    capital = record(store, "What is the capital of France?", answer="Paris")
    record(store, "Unrelated question", answer="nothing")
    assert [r["id"] for r in store.search_runs("photosynth")] == [plants]
    assert [r["id"] for r in store.search_runs("paris")] == [capital]  # answers too, case-insensitive
    assert [r["id"] for r in store.search_runs('"capital" (France*')] == [capital]
    assert store.search_runs("capital photosynthesis") == []  # every word must match
    assert store.search_runs("***") == []
    assert len(store.search_runs("   ")) == 3  # blank text is no filter


def test_search_sees_answers_written_by_finish_and_forgets_deleted_runs(store):
    run_id = store.start_run("a question", "cot")
    assert store.search_runs("zebra") == []
    store.finish_run(run_id, make_trace("a question", answer="zebra"))
    assert [r["id"] for r in store.search_runs("zebra")] == [run_id]
    assert store.delete_run(run_id) is True
    assert store.search_runs("zebra") == [] and store.search_runs("question") == []
    with db(store) as conn:
        assert conn.execute("SELECT count(*) FROM step").fetchone()[0] == 0
    assert_search_index_matches_runs(store)
    assert store.get_run(run_id) is None and store.delete_run(run_id) is False


def test_search_filters(store):
    batch_id = store.create_batch("in", "h", ["cot", "pal"], {}, total=2)
    a = record(store, "filter me", "cot", batch_id=batch_id, template_name="cot", template_version=1)
    b = record(store, "filter me", "pal", batch_id=batch_id)
    c = store.start_run("filter me", "cot")
    d = store.start_run("filter me", "cot", template_name="cot", template_version=2)
    store.fail_run(d, "boom")
    ids = lambda **f: {r["id"] for r in store.search_runs(**f)}  # noqa: E731
    assert ids(strategy="pal") == {b}
    assert ids(status="running") == {c} and ids(status="error") == {d}
    assert ids(batch_id=batch_id) == {a, b}
    assert ids(template_name="cot", template_version=2) == {d}
    assert ids(text="filter", strategy="cot", status="ok") == {a}


# --- batches, accuracy, templates, export


def test_batch_counts_and_accuracy_by_strategy(store):
    batch_id = store.create_batch("gsm8k.jsonl", "sha", ["cot", "pal"], {"device": "cpu"}, total=4)
    for i, correct in enumerate([True, True, False, None]):  # cot: 2 of 4 correct, one unanswered
        run_id = store.start_run(f"q{i}", "cot", batch_id=batch_id, question_id=str(i))
        answer = None if correct is None else "x"
        store.finish_run(run_id, make_trace(f"q{i}", answer=answer, tokens=(10 * (i + 1), 0)), correct=correct)
    pal = [store.start_run(f"q{i}", "pal", batch_id=batch_id, question_id=str(i)) for i in range(3)]
    store.finish_run(pal[0], make_trace("q0", "pal", n_steps=1, tokens=(7, 3)), correct=True)
    store.fail_run(pal[1], "crash")  # pal[2] is still running: not counted
    cot, pal_row = store.accuracy_by_strategy(batch_id)
    assert cot["strategy"] == "cot" and (cot["total"], cot["answered"], cot["correct"], cot["errors"]) == (4, 3, 2, 0)
    assert cot["accuracy"] == 0.5 and cot["mean_tokens"] == 10 * 3 * (1 + 2 + 3 + 4) / 4
    assert cot["mean_duration_ms"] >= 0
    assert (pal_row["total"], pal_row["answered"], pal_row["correct"], pal_row["errors"]) == (2, 1, 1, 1)
    assert pal_row["accuracy"] == 0.5 and pal_row["mean_tokens"] == (10 + 0) / 2
    counts = store.update_batch_counts(batch_id)
    assert (counts["done"], counts["correct"], counts["errors"], counts["status"]) == (6, 3, 1, "running")
    assert store.finished_question_ids(batch_id, "pal") == {"0", "1"}
    finished = store.finish_batch(batch_id, "interrupted")
    assert finished["status"] == "interrupted" and finished["finished_at"]
    assert store.resume_batch(batch_id)["status"] == "running"
    assert store.get_batch(batch_id)["strategies"] == ["cot", "pal"]
    assert store.get_batch(batch_id)["settings"] == {"device": "cpu"}
    with pytest.raises(ValueError):
        store.finish_batch(batch_id, "exploded")


def test_batches_list_newest_first_and_settings_dataclasses_serialise(store, tmp_path):
    settings = Settings(home=tmp_path, model_path=None, device="cpu", dtype=None)
    first = store.create_batch("a", "h1", ["cot"], settings, total=1)
    second = store.create_batch("b", "h2", ["cot"], {}, total=1)
    assert [b["id"] for b in store.list_batches()] == [second, first]
    assert store.get_batch(first)["settings"]["home"] == str(tmp_path)
    assert store.get_batch("nope") is None


def test_template_versions(store):
    assert store.ensure_shipped_templates({"cot": "name: cot\nversion: 1\n", "pal": "name: pal\n"}) == 2
    assert store.ensure_shipped_templates({"cot": "changed shipped text"}) == 0  # never overwritten
    assert store.latest_template_version("cot") == 1
    assert store.save_template("cot", "edit 1", note="shorter") == 2
    assert store.save_template("cot", "edit 2") == 3
    assert store.save_template("pal", "pal edit") == 2
    assert [(v["version"], v["note"]) for v in store.template_versions("cot")] == [(1, "shipped"), (2, "shorter"),
                                                                                   (3, "")]
    assert store.get_template("cot", 1) == "name: cot\nversion: 1\n"
    assert store.get_template("cot", 3) == "edit 2"
    assert store.latest_template_version("cot") == 3 and store.latest_template_version("none") is None
    with pytest.raises(KeyError):
        store.get_template("cot", 9)
    assert store.default_template_version("cot") is None
    store.promote_template("cot", 2)
    store.promote_template("cot", 3)
    assert store.default_template_version("cot") == 3
    with pytest.raises(KeyError):
        store.promote_template("cot", 9)
    assert store.default_template_version("cot") == 3


def test_export_jsonl_round_trips(store, tmp_path):
    ids = [record(store, f"export {i}", "cot" if i < 3 else "pal", correct=i == 0) for i in range(4)]
    record(store, "not exported", "pal")
    path = tmp_path / "runs.jsonl"
    assert store.export_jsonl(path, strategy="cot") == 3
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [run["id"] for run in lines] == ids[:3]  # oldest first
    assert lines == [store.get_run(run_id) for run_id in ids[:3]]
    assert lines[0]["steps"][2]["output"] == "out 2"
    assert store.export_jsonl(tmp_path / "all.jsonl") == 5


def test_fts_query_quotes_every_word():
    assert fts_query('say "hi" (now)*') == '"say"* "hi"* "now"*'
    assert fts_query("*** ()") is None
