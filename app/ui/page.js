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
}
