// notifier's service worker (served as /sw.js, scope /): shows pushed deals while no tab
// of the app is in view, and acknowledges what it showed, so the email is skipped.
//
// A push's payload (JSON, decrypted by the browser): {type, id, headline, body, url, tag,
// count, ack}. `ack` is a signed token the server made for this notification: posting it
// back (no cookie needed, nor sent) tells the server a person was shown everything up to
// `id`, as a visible page's {"type":"ack"} does. See SECURITY.md.
"use strict";

self.addEventListener("install", function () { self.skipWaiting(); });
self.addEventListener("activate", function (event) { event.waitUntil(self.clients.claim()); });

function appWindows() {
  return self.clients.matchAll({ type: "window", includeUncontrolled: true });
}

// A visible tab shows every deal live (or on reconnect) and acknowledges it itself.
function aTabIsInView() {
  return appWindows().then(function (tabs) {
    return tabs.some(function (tab) { return tab.visibilityState === "visible"; });
  });
}

function acknowledge(token) {
  return fetch("/api/push/ack", {
    method: "POST",
    credentials: "omit",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: token }),
  }).catch(function () { /* offline: the email will follow */ });
}

self.addEventListener("push", function (event) {
  var data = null;
  try { data = event.data ? event.data.json() : null; } catch (e) { data = null; }
  if (!data || typeof data.headline !== "string") return;
  event.waitUntil(aTabIsInView().then(function (inView) {
    if (inView) return undefined;
    return self.registration.showNotification(data.headline, {
      body: data.body || "",
      tag: data.tag || "notifier-" + data.id, // a repeat about the same item replaces it
      icon: "/favicon.ico",
      data: { url: data.url || "/", id: data.id },
    }).then(function () {
      return data.ack ? acknowledge(data.ack) : undefined;
    });
  }));
});

// A click brings an open tab of the app forward, or opens the item's page.
self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var url = (event.notification.data && event.notification.data.url) || "/";
  event.waitUntil(appWindows().then(function (tabs) {
    for (var i = 0; i < tabs.length; i++) {
      if ("focus" in tabs[i]) return tabs[i].focus();
    }
    return self.clients.openWindow(url);
  }));
});
