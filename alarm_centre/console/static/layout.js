// Shared by every console page: signing out (a POST carrying the session's CSRF token), and times.
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

document.addEventListener("DOMContentLoaded", () => {
  showLocalTimes(document);
  const button = document.getElementById("logout");
  if (!button) return;
  button.addEventListener("click", async () => {
    try {
      const me = await (await fetch("/console/api/me", { credentials: "same-origin" })).json();
      await fetch("/logout", { method: "POST", credentials: "same-origin", headers: { [me.csrf_header]: me.csrf } });
    } catch (e) { /* go to the sign-in page either way */ }
    window.location.assign("/login");
  });
});
