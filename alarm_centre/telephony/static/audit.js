// The call audit page: draw the month's calls, save each review. Forms post through the API with the
// session's CSRF token; results are said in a polite live region and focus stays where it was.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let me = null;

  function say(message, isError) {
    const box = $("audit-status");
    box.textContent = message;
    box.classList.toggle("error", !!isError);
  }

  async function api(method, path, body) {
    const resp = await fetch(path, {
      method, credentials: "same-origin",
      headers: { "Accept": "application/json", "Content-Type": "application/json", [me.csrf_header]: me.csrf },
      body: JSON.stringify(body),
    });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const d = data && data.detail;
      throw new Error((data && data.error) || ("HTTP " + resp.status) + (typeof d === "string" ? ": " + d : ""));
    }
    return data;
  }

  async function start() {
    me = await (await fetch("/console/api/me", { credentials: "same-origin" })).json();
    const draw = $("audit-draw");
    if (draw) {
      draw.addEventListener("click", async () => {
        try {
          const month = await api("POST", "/api/v1/call-audit/draw", { month: draw.dataset.month });
          say(`${month.drawn} calls drawn. Reloading the list…`);
          window.location.reload();
        } catch (e) { say(e.message, true); }
      });
    }
    for (const form of document.querySelectorAll("form.audit-review")) {
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const body = { verdict: form.elements.verdict.value, findings: form.elements.findings.value };
        try {
          const saved = await api("PUT", "/api/v1/call-audit/reviews/" + encodeURIComponent(form.dataset.review), body);
          say(`Review of call ${saved.call_id} saved (${saved.verdict.replaceAll("_", " ")}).`);
          form.dataset.saved = "true";
        } catch (e) { say(e.message, true); }
      });
    }
    document.body.dataset.audit = "ready";
  }

  document.addEventListener("DOMContentLoaded", () => { start().catch((e) => say(e.message, true)); });
})();
