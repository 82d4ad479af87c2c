"""The Experiments page in a real headless Chromium: the matrix with intervals, the accuracy-against-tokens chart,
the coloured per-question diff whose cells open their traces, and the exports.

The store is seeded with one two-configuration batch before the app starts (the default model loads as usual).
Screenshot: test-artifacts/ui/experiments.png.
"""
import csv
import json

import pytest

from app.store import Store
from prompts.trace import Step, Trace
from tests.app.browser import ARTIFACTS, browser_page, serving_app
from tests.app.test_ui_browser import expect, open_tab

pytestmark = pytest.mark.browser

A = [True, True, True, False, True, False]  # "cot": 4 of 6
B = [True, False, False, False, True, True]  # "cot@2/sc8-beta": 3 of 6


def seed(home) -> str:
    store = Store(home / "reason.db")
    configs = [{"name": "cot", "strategy": "cot"}, {"name": "cot@2/sc8-beta", "strategy": "cot"}]
    batch_id = store.create_batch("gsm8k.jsonl", "sha", ["cot"], {"configurations": configs}, 12)
    for name, outcomes, tokens in (("cot", A, 100), ("cot@2/sc8-beta", B, 400)):
        for i, correct in enumerate(outcomes):
            question = f"Question number {i}: how many apples?"
            run_id = store.start_config_run(name, question, "cot", batch_id=batch_id, question_id=f"q{i}", expected="5")
            trace = Trace(question=question, strategy="cot", template_name="cot", template_version=1)
            trace.add(Step(kind="llm", name="reasoning", input="prompt", output=f"{name} thinks. The answer is "
                           f"{5 if correct else 6}.", prompt_tokens=tokens - 20, completion_tokens=20))
            store.finish_run(run_id, trace.finish("5" if correct else "6"), correct)
    store.finish_batch(batch_id)
    store.close()
    return batch_id


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    home = tmp_path_factory.mktemp("experiments-home")
    batch_id = seed(home)
    with serving_app(home) as url:
        yield url, home, batch_id


@pytest.fixture(scope="module")
def page(app):
    with browser_page(app[0], accept_downloads=True) as page:
        yield page


def pick(page, elem_id: str, option: str) -> None:
    """Pick an option of one Gradio dropdown (A's and B's lists hold the same names)."""
    page.locator(f"#{elem_id} input").click()
    page.locator(f"#{elem_id}").get_by_role("option", name=option, exact=True).click()
    expect(page.locator(f"#{elem_id} input")).to_have_value(option)


def test_the_matrix_and_the_chart(page, app):
    open_tab(page, "Experiments")
    matrix = page.locator("#experiments-matrix")
    expect(matrix).to_contain_text("cot@2/sc8-beta")
    expect(matrix).to_contain_text("66.7%")  # cot: 4 of 6
    expect(matrix).to_contain_text("30.0–90.3%")  # its 95% Wilson interval
    expect(matrix).to_contain_text("95% CI")
    points = page.locator("#experiments-chart svg g.point")
    expect(points).to_have_count(2)
    assert points.nth(1).get_attribute("data-config") == "cot@2/sc8-beta"
    # more tokens sit further right; the better configuration sits higher
    cheap, costly = (points.nth(i).locator("circle") for i in range(2))
    assert float(cheap.get_attribute("cx")) < float(costly.get_attribute("cx"))
    assert float(cheap.get_attribute("cy")) < float(costly.get_attribute("cy"))


def test_the_diff_is_coloured_and_its_cells_open_traces(page, app):
    expect(page.locator("#experiments-a input")).to_have_value("cot")
    expect(page.locator("#experiments-b input")).to_have_value("cot@2/sc8-beta")
    verdict = page.locator("#experiments-verdict")
    expect(verdict).to_contain_text("A wins 2, loses 1, ties 3")  # q1, q2 for A; q5 for B
    expect(verdict).to_contain_text("exact McNemar p = 1")
    rows = page.locator("#experiments-diff [role=row].virtual-row")  # Gradio draws the body as a virtual grid
    expect(rows).to_have_count(6)
    cell = lambda row, column: page.locator(f"#experiments-diff [data-testid=cell-{row}-{column}]")  # noqa: E731
    passed, failed = cell(1, 3), cell(1, 4)  # q1: A right, B wrong
    expect(passed).to_contain_text("✓ 5")
    expect(failed).to_contain_text("✗ 6")
    green = page.evaluate("el => getComputedStyle(el).backgroundColor", passed.element_handle())
    red = page.evaluate("el => getComputedStyle(el).backgroundColor", failed.element_handle())
    assert green == "rgb(215, 240, 221)" and red == "rgb(251, 222, 222)"
    failed.click()
    trace = page.locator("#experiments-trace")
    expect(trace).to_contain_text("Q: Question number 1: how many apples?")
    expect(trace).to_contain_text("cot@2/sc8-beta thinks. The answer is 6.")
    passed.click()
    expect(trace).to_contain_text("cot thinks. The answer is 5.")
    page.locator("#experiments-only-changed").get_by_text("Only questions that changed").click()
    expect(rows).to_have_count(3)
    pick(page, "experiments-a", "cot@2/sc8-beta")
    expect(verdict).to_contain_text("A = cot@2/sc8-beta")
    pick(page, "experiments-b", "cot")
    expect(verdict).to_contain_text("A wins 1, loses 2, ties 3")
    page.screenshot(path=str(ARTIFACTS / "experiments.png"), full_page=True)


def test_exports(page, app):
    _, home, batch_id = app
    page.locator("#experiments-export-csv").click()
    link = page.locator("#experiments-export a").first
    expect(link).to_have_attribute("download", f"experiment-{batch_id[-8:]}.csv")
    with page.expect_download() as download:
        link.click()
    rows = list(csv.DictReader(open(download.value.path(), encoding="utf-8")))
    assert [(r["configuration"], r["accuracy"], r["95% CI"]) for r in rows] == [
        ("cot", "66.7%", "30.0–90.3%"), ("cot@2/sc8-beta", "50.0%", "18.8–81.2%")]
    page.locator("#experiments-export-jsonl").click()
    expect(page.locator("#experiments-export a").first).to_have_attribute("download", f"experiment-{batch_id[-8:]}.jsonl")
    lines = (home / "batches" / "exports" / f"experiment-{batch_id[-8:]}.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert first["config"] == "cot" and first["correct"] == 4 and first["ci95"][0] == pytest.approx(0.3, abs=1e-3)
