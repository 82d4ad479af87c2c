"""History's Fork here (edit a step in place), Branch here (a token's alternative), Compare with… and Replay,
in a real headless Chromium against the app on the default model.

The store is seeded before the app starts with one chain-of-thought run whose step has per-token
log-probabilities, so the test does not wait for a first run; the fork of that one step needs no model
call, a branch continues for at most 8 tokens. Screenshots go to test-artifacts/ui/ (fork.png, branch.png).
"""

import pytest

from app.store import Store
from prompts.trace import Step, Trace

from .browser import ARTIFACTS, browser_page, serving_app
from .test_ui_browser import expect, open_tab, textbox

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 150_000
TOKENS = [["The", -0.05, [["The", -0.05], ["So", -3.2]]], [" answer", -0.1, [[" answer", -0.1], [" total", -2.6]]],
          [" is", -0.02, [[" is", -0.02], [" was", -4.1]]], [" 7", -0.4, [[" 7", -0.4], [" 8", -1.3], [" seven", -2.9]]],
          [".", -0.01, [[".", -0.01]]]]


def seed(home) -> str:
    """A finished CoT run whose one step has tokens with alternatives (as the web app records them)."""
    store = Store(home / "reason.db")
    trace = Trace("Tom has 3 apples and buys 4 more. How many apples?", "cot", "cot", 1, "SmolLM2", "engine",
                  {"temperature": 0.0, "max_tokens": 8})
    trace.add(Step("llm", "user: Tom has 3 apples…", "The answer is 7.", "reasoning", 40, 5, 120.0,
                   meta={"logprobs": TOKENS, "finish_reason": "stop"}))
    run_id = store.start_run(trace.question, "cot", expected="7", template_name="cot", template_version=1,
                             backend="engine", sampling=trace.sampling)
    store.finish_run(run_id, trace.finish("7"), correct=True)
    store.close()
    return run_id


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("fork-home")
    run_id = seed(home)
    with serving_app(home) as url:
        yield url, run_id


@pytest.fixture(scope="module")
def page(served):
    with browser_page(served[0]) as page:
        yield page


def open_run(page, run_id: str) -> None:
    open_tab(page, "History")
    textbox(page, "hist-run-id").fill(run_id)
    page.locator("#hist-open").click()
    expect(page.locator("#hist-trace .trace.forkable")).to_be_visible()


def test_fork_here_edits_a_step_in_place_and_runs_on_from_it(page, served):
    run_id = served[1]
    open_run(page, run_id)
    card = page.locator("#hist-trace details.step[data-step='0']")
    card.get_by_role("button", name="Fork here").click()
    editor = card.locator(".fork-editor textarea")
    expect(editor).to_have_value("The answer is 7.")  # the step's own output, to edit in place
    expect(card.locator(".io.output")).to_be_hidden()
    editor.fill("Tom has 3 + 4 = 8 apples. The answer is 8.")
    card.get_by_role("button", name="Run fork").click()
    message = page.locator("#hist-message")
    expect(message).to_contain_text("Forked", timeout=RUN_TIMEOUT_MS)
    expect(message).to_contain_text(f"fork of {run_id} at step 1 (edited)")
    right = page.locator("#hist-rerun-trace")
    expect(right).to_contain_text("Answer: 8")
    expect(right.locator(".tag.edited")).to_be_visible()
    expect(page.locator("#hist-trace .tag.diverges")).to_contain_text("first divergence")
    page.screenshot(path=str(ARTIFACTS / "fork.png"), full_page=True)
    fork_id = message.locator("code").first.text_content()
    textbox(page, "hist-compare-id").fill(fork_id)
    page.locator("#hist-compare").click()
    expect(message).to_contain_text("First divergence at step 1")
    expect(message).to_contain_text("answers 7 | 8 (different)")


def test_branch_here_continues_one_of_a_tokens_alternatives(page, served):
    run_id = served[1]
    open_run(page, run_id)
    token = page.locator("#hist-trace details.step[data-step='0'] .tok[data-i='3']")
    expect(token).to_have_text(" 7")
    token.click()
    menu = page.locator("#hist-trace .branch-menu")
    expect(menu).to_contain_text("Branch here with:")
    menu.get_by_role("menuitem", name='" 8" 27%').click()
    message = page.locator("#hist-message")
    expect(message).to_contain_text(f"branch of {run_id} at step 1, token 3 → ' 8'", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#hist-rerun-trace .tag.edited")).to_have_text("branched at token 3")
    output = page.locator("#hist-rerun-trace details.step[data-step='0'] .io.output pre")
    expect(output).to_contain_text("The answer is 8")  # the kept tokens, the alternative, then the model's own
    expect(page.locator("#hist-rerun-trace .tok-diverge")).to_have_text(" 8")
    page.screenshot(path=str(ARTIFACTS / "branch.png"), full_page=True)


def test_replay_says_whether_it_came_out_identical(page, served):
    open_run(page, served[1])
    page.locator("#hist-replay").click()
    message = page.locator("#hist-message")
    expect(message).to_contain_text("Replayed", timeout=RUN_TIMEOUT_MS)
    expect(message).to_contain_text(f"replay of {served[1]}:")
    expect(page.locator("#hist-rerun-trace .trace-lineage")).to_contain_text("replay of")
