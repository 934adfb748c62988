// Shared by every console page: signing out (a POST carrying the session's CSRF token), times, and the
// warning before the session ends.
"use strict";

// <time datetime="…" data-local> elements arrive as readable UTC; show them in the viewer's local time
// (today: the time only; other days: the date too). The UTC text stays in the title, for handovers.
function showLocalTimes(root) {
  const now = new Date();
  for (const node of (root || document).querySelectorAll("time[data-local]")) {
    const at = new Date(node.getAttribute("datetime"));
    if (Number.isNaN(at.getTime())) continue;
    const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
    const sameDay = at.toDateString() === now.toDateString();
    const date = at.toLocaleDateString([], { day: "numeric", month: "short",
      year: at.getFullYear() === now.getFullYear() ? undefined : "numeric" });
    if (!node.title) node.title = node.textContent;
    node.textContent = sameDay ? time : `${date}, ${time}`;
    node.classList.add("local");
  }
}

// Drafts of notes (kept by console.js in this tab's sessionStorage) go when their author signs out.
function forgetDrafts() {
  try {
    for (const key of Object.keys(sessionStorage)) if (key.startsWith("tc-draft:")) sessionStorage.removeItem(key);
  } catch (e) { /* storage blocked: nothing was kept */ }
}

async function signOut() {
  forgetDrafts();
  try {
    const me = await (await fetch("/console/api/me", { credentials: "same-origin" })).json();
    await fetch("/logout", { method: "POST", credentials: "same-origin", headers: { [me.csrf_header]: me.csrf } });
  } catch (e) { /* go to the sign-in page either way */ }
  window.location.assign("/login");
}

// The session ends after a fixed time and after a spell without requests (WCAG 2.2.1 timing adjustable):
// two minutes before it does, a dialog says so and offers to stay signed in, as often as needed. Time
// left is counted from what the server says is left, so a workstation's wrong clock does not matter. A
// page with a live feed (the queue's stream, the commissioning checklist) keeps the idle limit at bay
// while the feed is up; other pages' only activity is their own requests.
window.TelecareSession = (function () {
  const WARN_S = 120;
  const MARGIN_MS = 2000;  // go to sign-in just after the server has ended the session, never before
  const s = { absoluteAt: Infinity, idleAt: Infinity, idleS: Infinity, live: false, csrf: null, header: null,
    warnTimer: null, endTimer: null, tick: null, opener: null };
  const $ = (id) => document.getElementById(id);

  function deadline() { return Math.min(s.absoluteAt, s.live ? Infinity : s.idleAt); }

  function learn(me) {
    if (!me || !me.session) return;
    const now = Date.now();
    s.absoluteAt = now + me.session.expires_in_s * 1000;
    s.idleAt = now + me.session.idle_left_s * 1000;
    s.idleS = me.session.idle_timeout_s;
    if (me.csrf) { s.csrf = me.csrf; s.header = me.csrf_header; }
    schedule();
  }

  function schedule() {
    clearTimeout(s.warnTimer);
    clearTimeout(s.endTimer);
    const end = deadline();
    if (!Number.isFinite(end)) return;
    const now = Date.now();
    s.warnTimer = setTimeout(warn, Math.max(0, end - WARN_S * 1000 - now));
    s.endTimer = setTimeout(ended, Math.max(0, end + MARGIN_MS - now));
  }

  function clock(ms) {
    const left = Math.max(0, Math.round(ms / 1000));
    return `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  }

  function countDown() {
    const end = deadline();
    $("session-left").textContent = clock(end - Date.now());
    $("session-at").textContent = new Date(end).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  }

  function warn() {
    const dialog = $("session-dialog");
    if (!dialog || dialog.open || !Number.isFinite(deadline())) return;
    if (deadline() - Date.now() > WARN_S * 1000) { schedule(); return; }
    s.opener = document.activeElement;
    countDown();
    clearInterval(s.tick);
    s.tick = setInterval(countDown, 1000);
    dialog.showModal();
    $("session-stay").focus();
  }

  function closeWarning() {
    clearInterval(s.tick);
    const dialog = $("session-dialog");
    if (dialog && dialog.open) dialog.close();
    const back = s.opener;
    s.opener = null;
    if (back && back.isConnected && back !== document.body) back.focus();
  }

  async function stay() {
    try {
      const resp = await fetch("/console/api/session/extend", {
        method: "POST", credentials: "same-origin", headers: { [s.header || "X-CSRF-Token"]: s.csrf || "" },
      });
      if (resp.status === 401) { ended(); return; }
      const body = await resp.json();
      closeWarning();
      learn({ session: body.session });
    } catch (e) {
      $("session-text").textContent = "Could not reach the bridge to keep you signed in. Try again.";
    }
  }

  // The deadline has passed: ask the server (another tab may have kept the session going), then sign in.
  async function ended() {
    clearTimeout(s.warnTimer);
    clearTimeout(s.endTimer);
    try {
      const resp = await fetch("/console/api/me", { credentials: "same-origin" });
      if (resp.ok) { closeWarning(); learn(await resp.json()); return; }
    } catch (e) { /* unreachable: treat as ended */ }
    window.location.assign("/login?ended=timeout");
  }

  return {
    start(me) { learn(me); },
    // A request this page made: the idle limit starts again from now.
    activity() { if (Number.isFinite(s.idleS)) { s.idleAt = Date.now() + s.idleS * 1000; schedule(); } },
    // A live feed up (true) or down (false): while it is up, the idle limit does not apply.
    live(on) { s.live = !!on; if (!on && Number.isFinite(s.idleS)) s.idleAt = Date.now() + s.idleS * 1000; schedule(); },
    stay,
    ended,
  };
})();

document.addEventListener("DOMContentLoaded", () => {
  showLocalTimes(document);
  const button = document.getElementById("logout");
  if (!button) return;
  button.addEventListener("click", signOut);
  document.getElementById("session-stay").addEventListener("click", () => window.TelecareSession.stay());
  document.getElementById("session-leave").addEventListener("click", signOut);
  // Escape answers the warning too: whoever pressed it is there.
  document.getElementById("session-dialog").addEventListener("cancel", (ev) => {
    ev.preventDefault();
    window.TelecareSession.stay();
  });
  fetch("/console/api/me", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : null))
    .then((me) => window.TelecareSession.start(me))
    .catch(() => { /* no warning without knowing the deadline; the session still ends on the server */ });
});
