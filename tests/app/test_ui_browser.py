"""The web app in a real headless Chromium: every strategy in Chat, follow-ups, honest outcomes, Stop,
the trace view, templates, batches, History and the Model page.

The app runs as a subprocess on a free loopback port with the default model and a temporary REASON_HOME.
Screenshots go to test-artifacts/ui/ (the trace view at 1400 and 420 px: trace-1400.png, trace-420.png).
Tests run in file order on one page: later ones use runs the earlier ones made.
"""
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from .browser import ARTIFACTS, ROOT, browser_page, serving_app

pytestmark = pytest.mark.browser

WIKI = ROOT / "tests" / "prompts" / "fixtures" / "wiki_small.jsonl"
RUN_TIMEOUT_MS = 150_000  # one strategy run on 2 CPU cores, max 48 tokens per call
QUESTIONS = {
    "direct": "What is 2 + 3?",
    "cot": "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "pal": "A box holds 6 eggs. How many eggs are in 4 boxes?",
    "react": "Where was Ilse Varga born?",
}
CONTRAST_JS = """([selector, pseudo]) => {
    const rgb = c => (c.match(/[\\d.]+/g) || [0, 0, 0, 0]).map(Number);
    const lum = ([r, g, b]) => [r, g, b].map(v => v / 255).map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
        .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
    const el = document.querySelector(selector);
    let back = el;
    while (back && (getComputedStyle(back).backgroundColor === 'rgba(0, 0, 0, 0)')) back = back.parentElement;
    const fg = lum(rgb(getComputedStyle(el, pseudo).color));
    const bg = lum(rgb(getComputedStyle(back || document.body).backgroundColor));
    return (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
}"""


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from prompts.wiki import import_corpus

    home = tmp_path_factory.mktemp("ui-home")
    import_corpus(str(WIKI), home / "wiki_corpus.db")  # where app/tools.py looks: ReAct runs offline
    with serving_app(home) as url:
        yield url, home


@pytest.fixture(scope="module")
def page(app_url):
    with browser_page(app_url[0]) as page:
        yield page


def expect(locator):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def choose(page, elem_id: str, option: str) -> None:
    """Pick an option of a Gradio dropdown by its label."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(f"#{elem_id} input")).to_have_value(option)


def options(page, elem_id: str) -> list[str]:
    """The labels a Gradio dropdown offers (opened and closed again)."""
    page.locator(f"#{elem_id} input").click()
    labels = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    return [label.strip().split("\n")[-1].strip() for label in labels]  # the selected one starts with a check mark


def textbox(page, elem_id: str):
    """A Gradio Textbox's field (a textarea, or an input when single-line)."""
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def set_number(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(value)
    box.press("Tab")  # Gradio takes the value on blur


def sampling(page, max_tokens: str, k: str | None = None) -> None:
    if not page.locator("#chat-max-tokens").is_visible():
        page.locator("#chat-sampling").get_by_text("Sampling").click()
    set_number(page, "chat-max-tokens", max_tokens)
    set_number(page, "chat-max-steps", "1")  # ReAct: one step, then its fallback
    if k is not None:
        set_number(page, "chat-k", k)


def ask(page, question: str) -> None:
    """Type a question and press Enter (Enter sends); wait for the stored run's trace."""
    field = textbox(page, "chat-question")
    field.fill(question)
    field.press("Enter")
    # every question in these tests is distinct, so its trace appearing means this run has ended
    expect(page.locator("#chat-trace")).to_contain_text(f"Q: {question}", timeout=RUN_TIMEOUT_MS)


def prompt_of_step(page, n: int = 0) -> str:
    """The (collapsed) prompt text of the trace's n-th model call."""
    return page.locator("#chat-trace details.io.prompt pre").nth(n).text_content()


def test_the_page_is_accessible_before_any_run(page):
    expect(page.locator("#chat-stop")).to_be_disabled()  # nothing runs
    expect(page.locator("#chat-status")).to_have_attribute("aria-live", "polite")
    for selector in ("#chat-ask", "#chat-clear"):
        assert page.evaluate(CONTRAST_JS, [selector, None]) >= 4.5, selector
    assert page.evaluate(CONTRAST_JS, ["#chat-question textarea", "::placeholder"]) >= 4.5
    field = textbox(page, "chat-question")
    field.fill("")
    field.type("first line")
    field.press("Shift+Enter")  # a new line, not a send
    field.type("second line")
    expect(field).to_have_value("first line\nsecond line")
    field.fill("   ")
    field.press("Enter")
    expect(page.locator("#chat-status")).to_contain_text("Please type a question")


@pytest.mark.parametrize("strategy", ["direct", "cot", "pal", "react"])
def test_chat_answers_with_each_strategy(page, strategy):
    sampling(page, "48")
    choose(page, "chat-strategy", strategy)
    expect(page.locator("#chat-template input")).to_have_value(f"default · {strategy}@1")
    ask(page, QUESTIONS[strategy])
    trace = page.locator("#chat-trace")
    expect(trace).to_contain_text(f"template {strategy}@1")
    expect(trace).to_contain_text("Answer:")
    expect(trace).to_contain_text("completion tokens")
    expect(trace.locator(".waterfall")).to_contain_text("Timing")
    label = {"direct": "Answer", "cot": "Chain of thought", "pal": "Program", "react": "Thought"}[strategy]
    expect(trace.locator(".step-kind").first).to_have_text(label)
    if strategy == "pal":
        expect(trace.locator(".step-kind", has_text="Sandbox output").first).to_be_visible()
    if strategy == "react":
        expect(trace).to_contain_text(re.compile(r"Observation|Parse error|Vote"))
    expect(trace.locator(".steps .tok").first).to_be_attached()  # tokens coloured by probability
    expect(page.locator("#chat-history")).to_contain_text(QUESTIONS[strategy])
    expect(page.locator("#chat-stop")).to_be_disabled()
    page.screenshot(path=str(ARTIFACTS / f"chat-{strategy}.png"), full_page=True)


def test_a_follow_up_is_answered_with_the_earlier_turn_in_its_prompt(page):
    page.locator("#chat-clear").click()
    sampling(page, "24")
    choose(page, "chat-strategy", "direct")
    first = "Tom has 3 boxes of 4 pencils and gives away 5. How many are left?"
    ask(page, first)
    follow_up = "And if he then gives away 2 more?"
    ask(page, follow_up)
    expect(page.locator("#chat-trace")).to_contain_text("follows 1 earlier turn")
    prompt = prompt_of_step(page)
    assert first in prompt and prompt.index(first) < prompt.rindex(follow_up), prompt


def test_a_pal_run_that_ends_in_error_is_not_shown_as_done(page):
    page.locator("#chat-clear").click()
    sampling(page, "1")  # one token: the program cannot be complete, nor can its fix
    choose(page, "chat-strategy", "pal")
    ask(page, "A shelf has 7 rows of 9 books. How many books?")
    status = page.locator("#chat-status .status-line")
    expect(status).to_have_class(re.compile("outcome-error"))
    expect(status).not_to_contain_text(re.compile("done|answered"))
    expect(page.locator("#chat-history .reply").last).to_have_class(re.compile("outcome-error"))
    expect(page.locator("#chat-trace .step.has-error").first).to_be_visible()


def test_a_long_question_shows_its_size_and_a_warning_before_it_runs(page):
    field = textbox(page, "chat-question")
    field.fill("How many apples? " * 2)
    expect(page.locator("#chat-prompt-size")).to_contain_text(re.compile(r"\d+ prompt tokens"))
    field.fill("Count the apples in this story. " + "The farmer picked apples from the tall tree. " * 900)
    expect(page.locator("#chat-prompt-size")).to_contain_text("Too long")
    field.fill("")


LIVE_JS = """() => {
    const status = document.querySelector('#chat-status')?.innerText || '';
    const trace = document.querySelector('#chat-trace');
    const tokens = (trace?.innerText || '').match(/(\\d+) tokens · [\\d.]+ s/);
    const blocks = trace ? trace.querySelectorAll('.kind-pending pre') : [];
    const text = blocks.length ? blocks[blocks.length - 1].textContent : '';
    const streaming = (document.querySelector('#chat-history')?.innerText || '').includes('▌');  // the reply's cursor
    return status.includes('running') && streaming && tokens && Number(tokens[1]) >= MIN && text.trim() ? text : false;
}"""
PREFILL_JS = "() => (document.querySelector('#chat-status')?.innerText || '').includes('reading the prompt')"


def start_long_run(page, question: str, min_tokens: int) -> str:
    """Ask with a large token budget; return the answer text seen while the run was still going."""
    sampling(page, "600")
    choose(page, "chat-strategy", "cot")
    textbox(page, "chat-question").fill(question)
    page.locator("#chat-ask").click()
    # one DOM snapshot: the status still says running while generated text is already shown,
    # in the trace and as the reply in the conversation
    seen = page.wait_for_function(LIVE_JS.replace("MIN", str(min_tokens)), timeout=RUN_TIMEOUT_MS)
    return seen.json_value()


def test_chat_answer_streams_and_shows_prefill_progress(page):
    page.locator("#chat-clear").click()
    question = ("Here are some notes. " + "The shop sells pens, pencils and paper in many colours. " * 60 +
                "Explain step by step how to add 17 and 25.")
    textbox(page, "chat-question").fill(question)
    sampling(page, "24")
    choose(page, "chat-strategy", "direct")
    page.locator("#chat-ask").click()
    page.wait_for_function(PREFILL_JS, timeout=RUN_TIMEOUT_MS, polling=100)  # the long prompt is being read
    expect(page.locator("#chat-status progress")).to_be_attached()
    expect(page.locator("#chat-trace")).to_contain_text("Q: Here are some notes.", timeout=RUN_TIMEOUT_MS)


def test_stop_is_stored_as_stopped_with_the_partial_text(page):
    page.locator("#chat-clear").click()
    # a counting run: the default model keeps counting for ~400 tokens (a squares table now ends after ~30,
    # before the test's Stop arrives, since the native decode attention moved its greedy path)
    question = "Write the numbers 1, 2, 3, 4, 5 and so on up to 400, separated by commas."
    partial = start_long_run(page, question, min_tokens=3)
    expect(page.locator("#chat-stop")).to_be_enabled()
    assert page.evaluate(CONTRAST_JS, ["#chat-stop", None]) >= 4.5
    page.screenshot(path=str(ARTIFACTS / "chat-streaming.png"), full_page=True)
    page.locator("#chat-stop").click()
    expect(page.locator("#chat-status")).to_contain_text("stopped", timeout=10_000)
    expect(page.locator("#chat-status .status-line")).to_have_class(re.compile("outcome-stopped"))
    trace = page.locator("#chat-trace")
    expect(trace).to_contain_text(f"Q: {question}")  # the trace shown is the stored run's
    expect(trace).to_contain_text("status stopped")
    expect(trace).to_contain_text("interrupted call")
    bubble = page.locator("#chat-history .reply").last
    expect(bubble).to_have_class(re.compile("outcome-stopped"))
    expect(bubble).to_contain_text(partial.strip()[:20])  # the partial answer is kept, not replaced by an error
    expect(trace).not_to_contain_text(" 0 prompt")
    expect(page.locator("#chat-stop")).to_be_disabled()
    page.screenshot(path=str(ARTIFACTS / "chat-stopped.png"), full_page=True)
    open_tab(page, "History")
    choose(page, "hist-status", "stopped")
    page.locator("#hist-search").click()
    expect(page.locator("#hist-table")).to_contain_text(question[:30])
    choose(page, "hist-status", "any")
    open_tab(page, "Chat")


def test_the_trace_view_of_a_self_consistency_run(page):
    page.locator("#chat-clear").click()
    sampling(page, "40", k="3")
    choose(page, "chat-strategy", "pal")
    ask(page, "Sam has 5 bags with 8 marbles each. He loses 6 marbles. How many marbles are left?")
    trace = page.locator("#chat-trace")
    expect(trace.locator(".step-kind", has_text="Vote")).to_be_visible()
    expect(trace.locator(".wf-bar")).to_have_count(6)  # 3 programs and 3 sandbox runs on one axis
    starts = trace.locator(".wf-bar.kind-program").evaluate_all("bars => bars.map(b => b.style.left)")
    assert starts[0] == starts[1] == starts[2], starts  # the sampled paths start together, each with its own time
    trace.locator(".steps .tok.p-vlow").first.hover()  # a token the model was unsure of: its alternatives show
    conversation = page.locator("#chat-history").bounding_box()
    assert trace.bounding_box()["x"] >= conversation["x"] + conversation["width"]  # beside it, not below the fold
    page.screenshot(path=str(ARTIFACTS / "trace-1400.png"), full_page=True)
    page.set_viewport_size({"width": 420, "height": 900})
    try:
        strategy, question = page.locator("#chat-strategy").bounding_box(), page.locator("#chat-question").bounding_box()
        assert strategy["y"] < question["y"]  # on a narrow screen the strategy selector sits above the question
        trace.scroll_into_view_if_needed()
        cut = trace.locator(".wf-label").evaluate_all("labels => labels.filter(l => l.scrollWidth > l.clientWidth).length")
        assert cut == 0  # the waterfall's labels wrap on a narrow screen instead of ending in "…"
        page.screenshot(path=str(ARTIFACTS / "trace-420.png"), full_page=True)
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})
        set_number(page, "chat-k", "1")


def test_template_versions_after_reload_save_and_promote(page, app_url):
    open_tab(page, "Prompt templates")
    choose(page, "tpl-name", "direct")
    editor = page.locator("#tpl-editor .cm-content")
    expect(editor).to_contain_text("name: direct")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type("\n# edited in the browser test\n")
    textbox(page, "tpl-note").fill("browser test edit")
    page.locator("#tpl-save").click()
    expect(page.locator("#tpl-message")).to_contain_text("Saved direct@2")
    expect(page.locator("#tpl-table")).to_contain_text("browser test edit")
    expect(editor).to_contain_text("version: 2")  # the saved YAML says its own version
    expect(page.locator("#tpl-default")).to_contain_text("direct@1")  # saving leaves the default
    page.reload()
    open_tab(page, "Prompt templates")
    choose(page, "tpl-name", "direct")
    assert {"1", "2"} <= set(options(page, "tpl-version")) and {"1", "2"} <= set(options(page, "tpl-diff-a"))
    page.locator("#tpl-reset").click()
    expect(page.locator("#tpl-version input")).to_have_value("1")
    expect(editor).to_contain_text("version: 1")
    page.locator("#tpl-editor .cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.type("name: direct\n- not a mapping item\n")
    page.locator("#tpl-preview").click()
    expect(page.locator("#tpl-rendered")).to_contain_text(re.compile(r"line \d+, column \d+"))  # not swallowed as HTML
    expect(page.locator("#tpl-rendered")).to_contain_text("<unicode string>")
    page.locator("#tpl-load").click()
    expect(page.locator("#tpl-rendered")).to_have_text("")  # the old message does not stay
    choose(page, "tpl-version", "2")
    expect(editor).to_contain_text("version: 2")  # picking a version shows it
    page.locator("#tpl-promote").click()
    expect(page.locator("#tpl-message")).to_contain_text("direct@2 is now the default")
    expect(page.locator("#tpl-default")).to_contain_text("direct@2")
    page.screenshot(path=str(ARTIFACTS / "templates.png"), full_page=True)

    open_tab(page, "Chat")
    choose(page, "chat-strategy", "direct")
    expect(page.locator("#chat-template input")).to_have_value("default · direct@2")
    sampling(page, "16")
    ask(page, "What is 10 minus 4?")
    expect(page.locator("#chat-trace")).to_contain_text("template direct@2")


def write_questions(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def upload(page, path: Path) -> None:
    """Put a file in the Batch page's upload box (clearing the one before)."""
    field = page.locator("#batch-file input[type=file]")
    if not field.count():
        page.locator("#batch-file").get_by_role("button", name="Clear").click()
    field.set_input_files(str(path))


def test_a_broken_upload_is_reported_at_once_with_line_numbers(page, tmp_path):
    open_tab(page, "Batch")
    expect(page.locator("#batch-accuracy")).to_contain_text("strategy")  # headers, not "1 2 3"
    bad = write_questions(tmp_path / "bad.jsonl", '{"question": "What is 1 + 1?"}\nnot json at all\n{"answer": 3}\n')
    upload(page, bad)
    check = page.locator("#batch-upload-check")
    expect(check).to_contain_text("1 usable question")
    expect(check).to_contain_text("line 2: broken JSON")
    expect(check).to_contain_text("line 3: no question")


def test_batch_start_twice_is_refused_and_results_download_in_input_order(page, app_url, tmp_path):
    questions = write_questions(tmp_path / "three.jsonl", '{"id": "q1", "question": "What is 2 + 2?", "answer": "4"}\n'
                                '{"id": "q2", "question": "What is 3 + 5?", "answer": "8"}\n'
                                '{"id": "q3", "question": "What is 9 - 7?", "answer": "2"}\n')
    open_tab(page, "Batch")
    upload(page, questions)
    expect(page.locator("#batch-upload-check")).to_contain_text("three.jsonl: 3 usable questions")
    page.locator("#batch-strategies").get_by_text("cot", exact=True).click()  # direct and cot
    expect(page.locator("#batch-templates-uses")).to_contain_text("direct → direct@2 (default)")
    # enough work that the first batch is still running when the second click arrives: at 16 tokens the
    # native kernels finished all six runs first once, and a second batch then rightly started
    set_number(page, "batch-max-tokens", "64")
    page.locator("#batch-start").dblclick()
    expect(page.locator("#batch-message")).to_contain_text("already running", timeout=20_000)
    expect(page.locator("#batch-list tbody tr", has_text="three.jsonl")).to_have_count(1)
    progress = page.locator("#batch-progress")
    expect(progress).to_contain_text("finished", timeout=2 * RUN_TIMEOUT_MS)
    expect(progress).to_contain_text("6/6")
    listed = page.locator("#batch-list tbody tr", has_text="three.jsonl")
    expect(listed).to_contain_text("finished")  # the list is current without a refresh
    expect(listed).to_contain_text("6/6")
    expect(page.locator("#batch-accuracy")).to_contain_text("direct")
    link = page.locator("#batch-download a").first
    expect(link).to_be_attached()
    body = page.request.get(urllib.parse.urljoin(app_url[0], link.get_attribute("href"))).text()
    order = [(r["id"], r["strategy"]) for r in map(json.loads, body.splitlines())]
    assert order == [(q, s) for q in ("q1", "q2", "q3") for s in ("direct", "cot")], order
    results = page.locator("#batch-results")
    expect(results.locator("[data-testid=cell-0-0]")).to_have_text("q1")
    results.locator("[data-testid=cell-1-1]").click()  # a result row (q1 with cot) opens its trace
    expect(page.locator("#batch-trace")).to_contain_text("Q: What is 2 + 2?")
    page.screenshot(path=str(ARTIFACTS / "batch.png"), full_page=True)


def test_history_opens_a_run_and_delete_asks_first(page):
    open_tab(page, "History")
    expect(page.locator("#hist-rerun-uses")).to_contain_text("direct@2")  # the version promoted on the templates page
    table = page.locator("#hist-table")
    expect(table).to_contain_text("direct")
    table.locator("[data-testid=cell-0-2]").click()  # the newest run's strategy cell selects its row
    run_id = textbox(page, "hist-run-id")
    expect(run_id).not_to_have_value("")
    chosen = run_id.input_value()
    expect(page.locator("#hist-trace")).to_contain_text("Answer:")
    page.locator("#hist-delete").click()
    expect(page.locator("#hist-confirm")).to_be_visible()
    expect(page.locator("#hist-confirm")).to_contain_text("cannot be undone")
    page.locator("#hist-delete-no").click()
    expect(page.locator("#hist-confirm")).to_be_hidden()
    expect(table).to_contain_text(chosen)
    page.locator("#hist-delete").click()
    page.locator("#hist-delete-yes").click()
    expect(page.locator("#hist-message")).to_contain_text(f"Deleted run {chosen}")
    expect(page.locator("#hist-trace")).not_to_contain_text("Answer:")  # the deleted trace is gone from the screen
    expect(table).not_to_contain_text(chosen)
    run_id.fill(chosen)
    page.locator("#hist-open").click()
    expect(page.locator("#hist-message")).to_contain_text(f"No run with id {chosen}")
    run_id.fill("nope")
    page.locator("#hist-open").click()
    expect(page.locator("#hist-message")).to_contain_text("No run with id nope")
    assert page.evaluate(CONTRAST_JS, ["#hist-delete", None]) >= 4.5
    page.screenshot(path=str(ARTIFACTS / "history.png"), full_page=True)


def test_model_page_describes_the_model(page):
    open_tab(page, "Model")
    info = page.locator("#model-info")
    expect(info).to_contain_text("llama")
    expect(info).to_contain_text("context length")
    textbox(page, "model-path").fill("/nonexistent/model.gguf")
    page.locator("#model-load").click()
    expect(page.locator("#model-message")).to_contain_text("Not loaded")
    expect(info).to_contain_text("llama")
    page.screenshot(path=str(ARTIFACTS / "model.png"), full_page=True)


def test_artifacts_written():
    shots = sorted(p.name for p in ARTIFACTS.glob("*.png")) if ARTIFACTS.is_dir() else []
    assert {"batch.png", "history.png", "model.png", "templates.png", "chat-react.png", "trace-1400.png",
            "trace-420.png"} <= set(shots), shots
