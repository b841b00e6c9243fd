// berth dashboard: fetches server-rendered HTML fragments with the bearer token kept in
// this tab's sessionStorage, every 2 s; keeps polling through a controller restart.
"use strict";
(function () {
  var KEY = "berth-api-token";
  var view = document.getElementById("view");
  var login = document.getElementById("login");
  var form = document.getElementById("login-form");
  var loginError = document.getElementById("login-error");
  var banner = document.getElementById("banner");
  var live = document.getElementById("live");
  var signout = document.getElementById("signout");
  var shown = "";
  var inFlight = false;

  function token() {
    return sessionStorage.getItem(KEY) || "";
  }

  function fragmentUrl() {
    var hash = location.hash.replace(/^#/, "") || "/";
    // One path segment only: a crafted link cannot point the fetch at another route.
    var m = hash.match(/^\/apps\/([^\/?#.][^\/?#]*)$/);
    if (!m) return "/ui/overview";
    var name = m[1];
    try { name = decodeURIComponent(name); } catch (e) { /* keep it as typed */ }
    return "/ui/apps/" + encodeURIComponent(name);
  }

  function showLogin(message) {
    view.textContent = "";
    shown = "";
    login.hidden = false;
    signout.hidden = true;
    loginError.textContent = message || "";
    live.textContent = "signed out";
  }

  function render(html) {
    login.hidden = true;
    signout.hidden = token() === "";
    banner.hidden = true;
    if (html !== shown) {
      view.innerHTML = html;
      shown = html;
    }
    live.textContent = "updated " + new Date().toLocaleTimeString();
  }

  function problem(text) {
    banner.textContent = text;
    banner.hidden = false;
    live.textContent = "retrying every 2 s";
  }

  function load() {
    if (inFlight) return;
    inFlight = true;
    var headers = {};
    if (token()) headers.Authorization = "Bearer " + token();
    fetch(fragmentUrl(), { headers: headers, cache: "no-store" })
      .then(function (r) {
        return r.text().then(function (body) {
          if (r.status === 401) {
            showLogin(token() ? "That token was refused." : "");
          } else if (r.ok && (r.headers.get("content-type") || "").indexOf("text/html") === 0) {
            render(body);
          } else {
            var message = body;
            try { message = JSON.parse(body).error; } catch (e) { /* plain text */ }
            problem("berth answered " + r.status + ": " + message);
          }
        });
      })
      .catch(function () {
        problem("berth is not answering (restarting?); retrying every 2 s.");
      })
      .then(function () { inFlight = false; });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById("token").value.trim());
    document.getElementById("token").value = "";
    load();
  });
  signout.addEventListener("click", function () {
    sessionStorage.removeItem(KEY);
    showLogin("");
  });
  window.addEventListener("hashchange", function () { shown = ""; load(); });
  load();
  setInterval(load, 2000);
})();
