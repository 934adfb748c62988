// One unit's page while it is in test mode: the commissioning checklist updates in place, without
// reloading the page or moving focus (WCAG 2.2.1), and "Pause live updates" stops it (WCAG 2.2.2).
// Each update reads this same page again and swaps in its checklist; the progress line is a polite
// status, so a screen reader hears "2 of 3 confirmed" when a press arrives, and nothing otherwise.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let paused = false;
  let timer = null;
  let lastSent = null;  // the checklist as the server last sent it

  function every() {
    const section = $("commissioning");
    const s = section ? Number(section.dataset.everyS) : NaN;
    return (Number.isFinite(s) && s > 0 ? s : 3) * 1000;
  }

  function later() {
    clearTimeout(timer);
    timer = paused ? null : setTimeout(update, every());
  }

  async function update() {
    timer = null;
    if (paused) return;
    let page;
    try {
      const resp = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (resp.redirected && new URL(resp.url).pathname === "/login") {
        window.location.assign("/login?ended=timeout");
        return;
      }
      if (!resp.ok) { later(); return; }
      page = new DOMParser().parseFromString(await resp.text(), "text/html");
    } catch (e) { later(); return; }
    if (window.TelecareSession) window.TelecareSession.activity();
    if (paused) return;  // paused while the answer was on its way
    const fresh = page.getElementById("commissioning");
    const section = $("commissioning");
    if (!fresh || !section) return;
    // Compare what the server sent with what it sent last time (the page's own copy has local times).
    const progress = fresh.querySelector("#commissioning-progress");
    const list = fresh.querySelector("#commissioning-checklist");
    const count = (node) => (node && node.querySelector("strong") ? node.querySelector("strong").textContent : "");
    const sent = count(progress) + "\n" + (list ? list.innerHTML : "");
    const changed = lastSent === null ? count(progress) !== count($("commissioning-progress")) : sent !== lastSent;
    lastSent = sent;
    if (changed && progress && list) {
      $("commissioning-progress").replaceChildren(...progress.childNodes);
      $("commissioning-checklist").replaceChildren(...list.childNodes);
      if (typeof showLocalTimes === "function") showLocalTimes(section);
    }
    if (fresh.dataset.live !== "true") {  // test mode is over: nothing more will change here
      section.dataset.live = "false";
      const button = $("live-pause");
      if (button) button.closest("p").replaceChildren(document.createTextNode("Test mode is over."));
      if (window.TelecareSession) window.TelecareSession.live(false);
      return;
    }
    later();
  }

  function setPaused(on) {
    paused = on;
    const button = $("live-pause");
    button.setAttribute("aria-pressed", on ? "true" : "false");
    if (on) { clearTimeout(timer); timer = null; } else update();
    if (window.TelecareSession) window.TelecareSession.live(!on);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const section = $("commissioning");
    const button = $("live-pause");
    if (!section || section.dataset.live !== "true" || !button) return;
    button.addEventListener("click", () => setPaused(!paused));
    if (window.TelecareSession) window.TelecareSession.live(true);
    later();
  });
})();
