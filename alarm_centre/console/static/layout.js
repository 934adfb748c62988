// Shared by every console page: signing out (a POST carrying the session's CSRF token).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
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
