() => {
  // Status lines are live regions: screen readers announce what a run or an action did.
  const LIVE = ["chat-status", "batch-progress", "batch-message", "hist-message", "tpl-message", "model-message"];
  const mark = () => {
    for (const id of LIVE) {
      const el = document.getElementById(id);
      if (el && el.getAttribute("aria-live") !== "polite") {
        el.setAttribute("aria-live", "polite");
        el.setAttribute("role", "status");
      }
    }
  };
  mark();
  new MutationObserver(mark).observe(document.body, { childList: true, subtree: true });

  // History's traces (.trace.forkable): "Fork here" turns a card's output into an editor, a click on a
  // token offers "Branch here" with its alternatives. Either goes to the server as one JSON action
  // through the hidden #hist-action box and #hist-action-go button. Model text is set with textContent
  // and .value only, never as HTML.
  const send = (payload) => {
    const box = document.querySelector("#hist-action textarea, #hist-action input");
    const go = document.querySelector("#hist-action-go");
    if (!box || !go) return;
    box.value = JSON.stringify(payload);
    box.dispatchEvent(new Event("input", { bubbles: true }));
    setTimeout(() => go.click(), 100);  // lets the box's new value reach Gradio first
  };
  const button = (text, css) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = css;
    b.textContent = text;
    return b;
  };
  const openEditor = (forkButton) => {
    const card = forkButton.closest("details.step");
    const trace = forkButton.closest(".trace");
    if (!card || !trace || card.querySelector(".fork-editor")) return;
    const editor = document.createElement("div");
    editor.className = "fork-editor";
    const label = document.createElement("label");
    label.textContent = "Edited output: the run goes on from it";
    const text = document.createElement("textarea");
    text.className = "fork-text";
    text.rows = 6;
    text.value = card.querySelector(".fork-src").value;
    label.appendChild(text);
    const run = button("Run fork", "fork-run");
    const cancel = button("Cancel", "fork-cancel");
    editor.append(label, run, cancel);
    const shown = card.querySelectorAll(".io.output");
    shown.forEach((el) => { el.hidden = true; });
    forkButton.closest(".fork-row").before(editor);
    forkButton.hidden = true;
    text.focus();
    cancel.addEventListener("click", () => {
      editor.remove();
      shown.forEach((el) => { el.hidden = false; });
      forkButton.hidden = false;
    });
    run.addEventListener("click", () => {
      run.disabled = true;
      run.textContent = "Forking…";
      send({ action: "fork", run: trace.dataset.run, step: Number(forkButton.dataset.step), text: text.value });
    });
  };
  const closeMenus = () => document.querySelectorAll(".branch-menu").forEach((m) => m.remove());
  const openBranch = (token) => {
    closeMenus();
    const card = token.closest("details.step");
    const trace = token.closest(".trace");
    const menu = document.createElement("span");
    menu.className = "branch-menu";
    menu.setAttribute("role", "menu");
    const head = document.createElement("span");
    head.className = "branch-head";
    head.textContent = "Branch here with:";
    menu.appendChild(head);
    const alternatives = JSON.parse(token.dataset.alts || "[]");
    for (const [alt, p] of alternatives) {
      const choice = button(`${JSON.stringify(alt)} ${Math.round(p * 100)}%`, "branch-alt");
      choice.setAttribute("role", "menuitem");
      choice.addEventListener("click", (event) => {
        event.stopPropagation();
        menu.textContent = "Branching…";
        send({ action: "branch", run: trace.dataset.run, step: Number(card.dataset.step), token: Number(token.dataset.i),
               alternative: alt });
      });
      menu.appendChild(choice);
    }
    if (!alternatives.length) menu.appendChild(document.createTextNode(" no other alternative was recorded"));
    token.after(menu);
    const first = menu.querySelector("button");
    if (first) first.focus();
  };
  document.addEventListener("click", (event) => {
    const fork = event.target.closest(".trace.forkable .fork-btn");
    if (fork) return openEditor(fork);
    const token = event.target.closest(".trace.forkable .tok[data-alts]");
    if (token) return openBranch(token);
    if (!event.target.closest(".branch-menu")) closeMenus();
  });
  document.addEventListener("keydown", (event) => {
    const token = event.target.closest && event.target.closest(".trace.forkable .tok[data-alts]");
    if (token && event.key === "Enter") openBranch(token);
    if (event.key === "Escape") closeMenus();
  });
}
