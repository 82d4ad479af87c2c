"""The web app in a real headless Chromium: every strategy in Chat, a template edit, a batch, History, Model.

The app runs as a subprocess on a free loopback port with the default model and a temporary REASON_HOME.
Screenshots of each page go to test-artifacts/ui/.
"""
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
WIKI = ROOT / "tests" / "prompts" / "fixtures" / "wiki_small.jsonl"
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = os.environ.get("REASON_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
                 "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_MS = 150_000  # one strategy run on 2 CPU cores, max 48 tokens per call
QUESTIONS = {
    "direct": "What is 2 + 3?",
    "cot": "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "pal": "A box holds 6 eggs. How many eggs are in 4 boxes?",
    "react": "Where was Ilse Varga born?",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    """Poll the app until it answers HTTP (model loading takes a few seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)  # polling interval, not synchronisation
    pytest.fail(f"the app did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from prompts.wiki import import_corpus

    home = tmp_path_factory.mktemp("ui-home")
    import_corpus(str(WIKI), home / "wiki_corpus.db")  # where app/tools.py looks: ReAct runs offline
    port = free_port()
    log = home / "server.log"
    env = {**os.environ, "REASON_HOME": str(home), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("REASON_MODEL", None)  # the default model
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "app.ui", "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, process, log)
        yield url, home
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def page(app_url):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(app_url[0])
        yield page
        browser.close()


def expect(locator):
    from playwright.sync_api import expect as pw_expect

    return pw_expect(locator)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def choose(page, elem_id: str, option: str) -> None:
    """Pick an option of a Gradio dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(f"#{elem_id} input")).to_have_value(option)


def textbox(page, elem_id: str):
    """A Gradio Textbox's field (a textarea, or an input when single-line)."""
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def set_number(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input[type=number]").first
    box.fill(value)
    box.press("Tab")  # Gradio takes the value on blur


def ask(page, question: str) -> None:
    textbox(page, "chat-question").fill(question)
    page.locator("#chat-ask").click()
    # every question in these tests is distinct, so its trace appearing means this run has ended
    expect(page.locator("#chat-trace")).to_contain_text(f"Q: {question}", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#chat-status")).to_contain_text("done")


def test_empty_question_is_refused(page):
    textbox(page, "chat-question").fill("   ")
    page.locator("#chat-ask").click()
    expect(page.locator("#chat-status")).to_contain_text("Please type a question")


@pytest.mark.parametrize("strategy", ["direct", "cot", "pal", "react"])
def test_chat_answers_with_each_strategy(page, strategy):
    if not page.locator("#chat-max-tokens").is_visible():
        page.locator("#chat-sampling").get_by_text("Sampling").click()
    set_number(page, "chat-max-tokens", "48")
    set_number(page, "chat-max-steps", "1")  # ReAct: one step, then its fallback
    choose(page, "chat-strategy", strategy)
    ask(page, QUESTIONS[strategy])
    trace = page.locator("#chat-trace")
    expect(trace).to_contain_text(f"{strategy} · template {strategy} v1")
    expect(trace).to_contain_text("Answer:")
    expect(trace).to_contain_text("1. llm")
    expect(trace).to_contain_text("completion tokens")
    if strategy == "pal":
        expect(trace).to_contain_text("Program:")
        expect(trace.locator("code").first).to_be_visible()
    if strategy == "react":
        expect(trace).to_contain_text(re.compile(r"Action:|parse_error|majority vote"))
    expect(page.locator("#chat-history")).to_contain_text(QUESTIONS[strategy])
    page.screenshot(path=str(ARTIFACTS / f"chat-{strategy}.png"), full_page=True)


LIVE_JS = """() => {
    const status = document.querySelector('#chat-status')?.innerText || '';
    const trace = document.querySelector('#chat-trace');
    const tokens = (trace?.innerText || '').match(/generating… \\((\\d+) tokens/);
    const blocks = trace ? trace.querySelectorAll('code') : [];
    const text = blocks.length ? blocks[blocks.length - 1].textContent : '';
    const streaming = (document.querySelector('#chat-history')?.innerText || '').includes('▌');  // the reply's cursor
    return status.includes('running') && streaming && tokens && Number(tokens[1]) >= MIN && text.trim() ? text : false;
}"""


def start_long_run(page, question: str, min_tokens: int) -> str:
    """Ask with a large token budget; return the answer text seen while the run was still going."""
    if not page.locator("#chat-max-tokens").is_visible():
        page.locator("#chat-sampling").get_by_text("Sampling").click()
    set_number(page, "chat-max-tokens", "600")
    choose(page, "chat-strategy", "cot")
    textbox(page, "chat-question").fill(question)
    page.locator("#chat-ask").click()
    # one DOM snapshot: the status still says running while generated text is already shown,
    # in the trace and as the reply in the conversation
    seen = page.wait_for_function(LIVE_JS.replace("MIN", str(min_tokens)), timeout=RUN_TIMEOUT_MS)
    return seen.json_value()


def test_chat_answer_streams_before_the_run_ends(page):
    question = "Explain step by step how to add 17 and 25, then check the result by subtraction."
    partial = start_long_run(page, question, min_tokens=5)
    page.screenshot(path=str(ARTIFACTS / "chat-streaming.png"), full_page=True)
    expect(page.locator("#chat-trace")).to_contain_text(f"Q: {question}", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#chat-status")).to_contain_text("done")
    final = page.locator("#chat-trace pre code").nth(1).text_content()  # [0] is the prompt, [1] the completion
    assert final.startswith(partial.rstrip()), (partial, final)


def test_stop_cancels_the_run_and_the_run_is_recorded(page):
    question = "List the numbers from 1 to 300, each with its square, one per line."
    start_long_run(page, question, min_tokens=3)
    page.locator("#chat-stop").click()
    expect(page.locator("#chat-status")).to_contain_text("stopped", timeout=5_000)
    trace = page.locator("#chat-trace")
    expect(trace).to_contain_text(f"Q: {question}")  # the trace shown is the stored run's
    expect(trace).to_contain_text("status error")
    expect(trace).to_contain_text("stopped by the user")
    expect(trace).to_contain_text("interrupted call")
    page.screenshot(path=str(ARTIFACTS / "chat-stopped.png"), full_page=True)
    open_tab(page, "History")
    expect(page.locator("#hist-table")).to_contain_text(question[:30])
    open_tab(page, "Chat")


def test_saved_template_version_is_used_by_the_next_run(page, app_url):
    open_tab(page, "Prompt templates")
    choose(page, "tpl-name", "direct")
    editor = page.locator("#tpl-editor .cm-content")
    expect(editor).to_contain_text("name: direct")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type("\n# edited in the browser test\n")
    textbox(page, "tpl-note").fill("browser test edit")
    page.locator("#tpl-save").click()
    expect(page.locator("#tpl-message")).to_contain_text("saved direct@2")
    expect(page.locator("#tpl-table")).to_contain_text("browser test edit")
    page.locator("#tpl-preview").click()
    expect(page.locator("#tpl-rendered")).to_contain_text(re.compile(r"\d+ tokens"))
    page.screenshot(path=str(ARTIFACTS / "templates.png"), full_page=True)

    open_tab(page, "Chat")
    choose(page, "chat-strategy", "direct")
    ask(page, "What is 10 minus 4?")
    expect(page.locator("#chat-trace")).to_contain_text("template direct v2")


def test_batch_runs_to_the_end_with_results(page, tmp_path):
    questions = tmp_path / "three.jsonl"
    questions.write_text('{"id": "q1", "question": "What is 2 + 2?", "answer": "4"}\n'
                         '{"id": "q2", "question": "What is 3 + 5?", "answer": "8"}\n'
                         '{"id": "q3", "question": "What is 9 - 7?", "answer": "2"}\n')
    open_tab(page, "Batch")
    page.locator("#batch-file input[type=file]").set_input_files(str(questions))
    expect(page.locator("#batch-file")).to_contain_text("three.jsonl")
    set_number(page, "batch-max-tokens", "32")
    page.locator("#batch-start").click()
    expect(page.locator("#batch-message")).to_contain_text("started batch")
    progress = page.locator("#batch-progress")
    expect(progress).to_contain_text("finished", timeout=RUN_TIMEOUT_MS)
    expect(progress).to_contain_text("3/3")
    results = page.locator("#batch-results")
    for qid in ("q1", "q2", "q3"):
        expect(results).to_contain_text(qid)
    expect(page.locator("#batch-accuracy")).to_contain_text("direct")
    expect(page.locator("#batch-download")).to_contain_text(".jsonl")
    page.screenshot(path=str(ARTIFACTS / "batch.png"), full_page=True)


def test_history_opens_a_run(page):
    open_tab(page, "History")
    table = page.locator("#hist-table")
    expect(table).to_contain_text("direct")
    table.locator("[data-testid=cell-0-2]").click()  # the newest run's strategy cell selects its row
    expect(textbox(page, "hist-run-id")).not_to_have_value("")
    expect(page.locator("#hist-trace")).to_contain_text("Answer:")
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
    assert {"batch.png", "history.png", "model.png", "templates.png", "chat-react.png"} <= set(shots), shots
