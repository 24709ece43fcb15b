// Tether console: the only script. No inline script anywhere (CSP script-src 'self').
// Pages that wait for something carry data-poll (a small JSON endpoint) and data-state;
// when the state changes the page reloads, so everything shown stays server-rendered.
(function () {
  "use strict";
  var main = document.querySelector("[data-poll]");
  if (main) {
    var url = main.getAttribute("data-poll");
    var state = main.getAttribute("data-state");
    var every = parseInt(main.getAttribute("data-every") || "2000", 10);
    var badge = document.getElementById("live");
    var tick = function () {
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 401) { window.location.assign(main.getAttribute("data-login")); return null; }
          return r.ok ? r.json() : null;
        })
        .then(function (doc) {
          if (!doc) { return; }
          if (badge) { badge.textContent = "live · checked " + new Date().toLocaleTimeString(); }
          if (doc.state !== state) { window.location.reload(); }
        })
        .catch(function () { if (badge) { badge.textContent = "offline"; } });
    };
    window.setInterval(tick, every);
  }
  // Confirm dangerous buttons (break-glass, suspend).
  document.querySelectorAll("[data-confirm]").forEach(function (el) {
    el.addEventListener("click", function (ev) {
      if (!window.confirm(el.getAttribute("data-confirm"))) { ev.preventDefault(); }
    });
  });
})();
