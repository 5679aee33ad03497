// Web Push on the page: registers the service worker (/sw.js), and subscribes this browser
// when the shopper asks (Preferences, or the dashboard's desktop-notification offer): the
// browser asks for permission only on that click. The subscription is stored with
// POST /api/push-subscriptions; opting out unsubscribes and deletes it. A browser whose
// user opted in registers its subscription again on each page (idempotent), so a logout,
// which stops pushes to the browsers of the tokens it revoked, is undone by the next login.
(function () {
  "use strict";

  var supported = "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;

  function loggedIn() { return document.getElementById("live") !== null; }

  function username() {
    var el = document.querySelector(".who .username");
    return el ? el.textContent.trim() : "";
  }

  function flagKey() { return "notifier.push." + username(); }

  function stored(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return null; }
  }

  function store(key, value) {
    try { window.localStorage.setItem(key, value); } catch (e) { /* private mode: not kept */ }
  }

  function xsrf() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-XSRFToken"] || ""; } catch (e) { return ""; }
  }

  function api(method, path, body) {
    return fetch(path, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-XSRFToken": xsrf() },
      body: body === undefined ? undefined : JSON.stringify(body),
    }).then(function (response) {
      if (!response.ok) throw new Error("the server answered " + response.status);
      return response;
    });
  }

  function keyBytes(base64url) {
    var padded = (base64url + "===".slice((base64url.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    var raw = window.atob(padded);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function sameKey(subscription, key) {
    var current = subscription.options && subscription.options.applicationServerKey;
    if (!current) return true;
    var a = new Uint8Array(current);
    if (a.length !== key.length) return false;
    for (var i = 0; i < a.length; i++) if (a[i] !== key[i]) return false;
    return true;
  }

  var registration = null;
  function ready() {
    if (!registration) {
      registration = navigator.serviceWorker.register("/sw.js", { scope: "/" }).then(function () {
        return navigator.serviceWorker.ready;
      });
    }
    return registration;
  }

  function save(subscription) {
    return api("POST", "/api/push-subscriptions", subscription.toJSON());
  }

  // Subscribe this browser (permission granted already) and store it.
  function subscribe() {
    return Promise.all([ready(), api("GET", "/api/push/public-key").then(function (r) { return r.json(); })])
      .then(function (both) {
        var manager = both[0].pushManager;
        var key = keyBytes(both[1].public_key);
        return manager.getSubscription().then(function (existing) {
          if (existing && sameKey(existing, key)) return existing;
          var stale = existing ? existing.unsubscribe() : Promise.resolve();
          return stale.then(function () {
            return manager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
          });
        });
      })
      .then(save)
      .then(function () { store(flagKey(), "on"); });
  }

  function unsubscribe() {
    store(flagKey(), "off");
    return ready().then(function (reg) { return reg.pushManager.getSubscription(); }).then(function (existing) {
      if (!existing) return undefined;
      var endpoint = existing.endpoint;
      return existing.unsubscribe().then(function () {
        return api("DELETE", "/api/push-subscriptions", { endpoint: endpoint });
      });
    });
  }

  function setupToggle(box) {
    var status = document.getElementById("push-status");
    function say(text) { if (status) status.textContent = text; }
    if (!supported) {
      box.disabled = true;
      say("This browser cannot receive push notifications.");
      return;
    }
    ready().then(function (reg) { return reg.pushManager.getSubscription(); }).then(function (existing) {
      box.checked = Boolean(existing) && stored(flagKey()) === "on";
    }, function () { /* no service worker here: stays unticked */ });
    if (Notification.permission === "denied") say("Notifications are blocked for this site in your browser's settings.");
    box.addEventListener("change", function () {
      if (!box.checked) {
        unsubscribe().then(function () { say("Off for this browser."); }, function () { say("Off for this browser."); });
        return;
      }
      Promise.resolve(Notification.requestPermission()).then(function (permission) {
        if (permission !== "granted") throw new Error("permission");
        return subscribe();
      }).then(function () {
        say("On: deals reach this browser even when no notifier tab is open.");
      }, function (e) {
        box.checked = false;
        say(e && e.message === "permission"
          ? "Your browser did not allow notifications."
          : "This browser could not subscribe (its push service did not answer); try again later.");
      });
    });
  }

  function setupRemoveAll(button) {
    button.addEventListener("click", function () {
      store(flagKey(), "off");
      api("DELETE", "/api/push-subscriptions", { all: true }).then(function () {
        var box = document.querySelector("[data-push-toggle]");
        if (box) box.checked = false;
        button.parentNode.textContent = "Push is off on all your browsers.";
      }, function () { /* the button stays: try again */ });
    });
  }

  // The dashboard's one-click desktop offer (static/app.js asks for the permission): once
  // it is granted, this browser is subscribed too.
  function followDesktopOffer(button) {
    button.addEventListener("click", function () {
      if (!navigator.permissions) return;
      navigator.permissions.query({ name: "notifications" }).then(function (status) {
        function granted() { return status.state === "granted"; }
        function go() { subscribe().catch(function () { /* no push service: desktop only */ }); }
        if (granted()) { go(); return; }
        status.addEventListener("change", function once() {
          status.removeEventListener("change", once);
          if (granted()) go();
        });
      }, function () { /* unknown to this browser */ });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!loggedIn() || !supported) {
      var box = document.querySelector("[data-push-toggle]");
      if (box) setupToggle(box);
      return;
    }
    ready().then(function (reg) {
      if (stored(flagKey()) !== "on" || Notification.permission !== "granted") return undefined;
      return reg.pushManager.getSubscription().then(function (existing) { return existing && save(existing); });
    }).catch(function () { /* registered again on the next page */ });
    var toggle = document.querySelector("[data-push-toggle]");
    if (toggle) setupToggle(toggle);
    var removeAll = document.querySelector("[data-push-remove-all]");
    if (removeAll) setupRemoveAll(removeAll);
    var offer = document.querySelector("[data-desktop-enable]");
    if (offer) followDesktopOffer(offer);
  });
})();
