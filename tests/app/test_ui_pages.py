"""The pages' actions on a tiny model, without a browser: batches, templates, history, chat refusals, prompt size."""
import threading

import pytest

import app.ui.batches as batches_module
from app.settings import Settings
from app.ui import chat, chat_run, history, templates_page
from app.ui.batch_views import chosen_templates, templates_in_use
from app.ui.batches import BatchManager
from app.ui.state import AppState
from prompts.template import TemplateError, shipped_template_body


@pytest.fixture(scope="module")
def state(tiny_model, tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("pages-home"), model_path=None, device="cpu", dtype="float32")
    state = AppState.open(settings, tiny_model)
    yield state
    state.engine.close()


@pytest.fixture
def held(monkeypatch):
    """Batches that run until released (run_batch waits), so a second Start meets a running one."""
    release = threading.Event()
    monkeypatch.setattr(batches_module, "run_batch", lambda *args, **kwargs: release.wait(30))
    yield release
    release.set()


def test_a_second_start_on_the_same_file_is_refused_and_the_name_is_kept(state, held, tmp_path):
    questions = tmp_path / "my questions.jsonl"
    questions.write_text('{"id": "a", "question": "1+1?", "answer": "2"}\n')
    manager = BatchManager(state)
    first = manager.start(str(questions), ["direct"])
    with pytest.raises(ValueError, match="already running on my questions.jsonl"):
        manager.start(str(questions), ["direct", "cot"])
    assert state.store.get_batch(first)["input_name"] == "my questions.jsonl"
    assert [b["id"] for b in state.store.list_batches() if b["input_name"] == "my questions.jsonl"] == [first]
    held.set()
    manager.running[first].thread.join(10)
    assert manager.start(str(questions), ["direct"]) != first  # once it ended, the file can run again


def test_a_batch_runs_the_picked_template_versions(state, held, tmp_path):
    from app.templates import save_template

    version = save_template(state.store, "cot", shipped_template_body("cot") + "\n# for the batch\n")
    assert chosen_templates(state, ["direct", "cot"], [f"cot@{version}"]) == {"cot": f"cot@{version}"}
    assert f"cot → <b>cot@{version}</b>" in templates_in_use(state, ["direct", "cot"], [f"cot@{version}"])
    assert "direct → <b>direct@1</b> (default)" in templates_in_use(state, ["direct", "cot"], [f"cot@{version}"])
    with pytest.raises(TemplateError, match="not one of the chosen strategies"):
        chosen_templates(state, ["direct"], [f"cot@{version}"])
    questions = tmp_path / "t.jsonl"
    questions.write_text('{"question": "2+2?"}\n')
    batch_id = BatchManager(state).start(str(questions), ["cot"], templates={"cot": f"cot@{version}"})
    assert state.store.get_batch(batch_id)["settings"]["templates"] == {"cot": f"cot@{version}"}


def test_saving_stamps_the_version_keeps_the_default_and_promoting_shows_everywhere(state):
    body = shipped_template_body("direct") + "\n# edited\n"
    message, editor, _, table, version, *_ = templates_page.save(state, "direct", body, "note")
    saved = version["value"]
    assert f"Saved <b>direct@{saved}</b>" in message and f"version: {saved}" in editor
    assert "Runs still use direct@1" in message
    assert [choice for choice in version["choices"]][-1] == saved
    templates_page.promote(state, "direct", saved)
    assert any(row[:3] == ["direct", saved, "default"] for row in templates_page.versions_table(state))
    assert chat.template_choices(state, "direct")[0] == (f"default · direct@{saved}", chat_run.DEFAULT)
    assert f"direct@{saved}" in templates_page.default_line(state, "direct")


def test_a_yaml_error_keeps_its_line_and_column_escaped(state):
    shown = templates_page.preview(state, "name: direct\n- item\n", "q")
    assert "line 2, column 1" in shown and "&lt;unicode string&gt;" in shown and "<unicode" not in shown
    assert "Not saved" in templates_page.save(state, "direct", "name: direct\n- item\n", "")[0]


def test_history_opens_an_unknown_id_with_a_clear_message_and_delete_clears_the_screen(state):
    run_id, _ = state.ask("2+2?", "direct", None, {"max_tokens": 2}, chat_run.StrategyOptions())
    message, trace, _ = history.open_run(state, run_id)
    assert message == "" and "Q: 2+2?" in trace
    confirm, text, _ = history.ask_to_delete(state, run_id)
    assert confirm["visible"] is True and "cannot be undone" in text and state.store.get_run(run_id)
    confirm, message, shown_id, trace, other = history.delete(state, run_id)
    assert confirm["visible"] is False and f"Deleted run {run_id}" in message
    assert (shown_id, other) == ("", "") and "Q: 2+2?" not in trace
    message, trace, _ = history.open_run(state, run_id)
    assert f"No run with id <code>{run_id}</code>" in message and trace == ""


def test_chat_refuses_react_without_a_corpus_or_network(state, monkeypatch):
    monkeypatch.setattr(chat_run, "wiki_problem", lambda settings: "no corpus; `reason wiki import FILE`")
    updates = list(chat_run.submit(state, {}, "s", "Where was Ilse born?", [], [], "react", chat_run.DEFAULT,
                                   0, 1, 0, 0, 1, 8, None, 1, 1))
    assert len(updates) == 1 and "reason wiki import" in updates[0][2] and "outcome-error" in updates[0][2]
    assert state.store.search_runs(text="Ilse") == []  # nothing ran


def test_a_follow_up_run_carries_the_turn_and_the_size_counts_it(state):
    turns = [{"question": "Tom has 7 pencils.", "answer": "7"}]
    alone = chat.prompt_size(state, "And 2 more?", "direct", chat_run.DEFAULT, [], 16)
    with_turn = chat.prompt_size(state, "And 2 more?", "direct", chat_run.DEFAULT, turns, 16)
    count = lambda html: int(html.split(" prompt tokens")[0].split(">")[-1].replace(",", ""))  # noqa: E731
    assert count(with_turn) > count(alone) and "1 earlier turn" in with_turn
    updates = list(chat_run.submit(state, {}, "s", "And 2 more?", [], turns, "direct", chat_run.DEFAULT,
                                   0, 1, 0, 0, 1, 4, None, 1, 1))
    conversation, trace, status, _, new_turns, ask, stop = updates[-1]
    assert "follows 1 earlier turn" in trace and "Tom has 7 pencils." in trace
    assert len(new_turns) == 2 and ask["interactive"] is True and stop["interactive"] is False
    assert any(u[6].get("interactive") is True for u in updates[:-1])  # Stop was on while it ran
