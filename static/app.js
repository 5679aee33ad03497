// notifier's page glue: the live indicator, toasts, read state, relative times, and the
// page's event bus: every pushed notification fires a DOM event on `document`
// (notification:deal, notification:system, notification:job, notification:read)
// carrying its data, so any component can react without knowing about the socket.
(function () {
  "use strict";

  htmx.config.wsReconnectDelay = "full-jitter";
  // Show 4xx fragments (form errors) where they were aimed; 5xx stay errors.
  htmx.config.responseHandling = [
    { code: "204", swap: false },
    { code: "[23]..", swap: true },
    { code: "4..", swap: true, error: false },
    { code: "...", swap: false, error: true },
  ];

  var TOAST_MS = 6000;

  // The newest notification this page holds: sent as last_id on every (re)connect, so the
  // server replays whatever the page missed while it was offline, in order.
  function newestId() {
    var live = document.getElementById("live");
    var newest = (live && live.getAttribute("data-last-id")) || "";
    document.querySelectorAll("#notification-list > li[data-id]").forEach(function (row) {
      var id = row.getAttribute("data-id");
      if (id > newest) newest = id; // ids are zero-padded: text order is creation order
    });
    return newest;
  }

  var openSocket = htmx.createWebSocket || function (url) { return new WebSocket(url, []); };
  htmx.createWebSocket = function (url) {
    var id = newestId();
    return openSocket(id ? url + (url.indexOf("?") >= 0 ? "&" : "?") + "last_id=" + encodeURIComponent(id) : url);
  };

  function setStatus(live, text) {
    var el = document.getElementById("live-status");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("live", live);
    el.classList.toggle("offline", !live);
  }

  // Events carried in fragments: <span data-event="notification:deal" data-detail='{...}'>.
  function dispatchCarried(sink) {
    sink.querySelectorAll("[data-event]").forEach(function (node) {
      var detail = null;
      try { detail = JSON.parse(node.getAttribute("data-detail") || "null"); } catch (e) { detail = null; }
      node.remove();
      document.dispatchEvent(new CustomEvent(node.getAttribute("data-event"), { detail: detail }));
    });
  }

  // A notification delivered twice (a resume overlapping the live stream) shows once.
  function dropDuplicateRows(list) {
    var seen = {};
    list.querySelectorAll(":scope > li[id^='notification-']").forEach(function (row) {
      if (seen[row.id]) row.remove(); else seen[row.id] = true;
    });
  }

  function expireToasts(box) {
    box.querySelectorAll(".toast:not([data-timer])").forEach(function (toast) {
      toast.setAttribute("data-timer", "1");
      setTimeout(function () { toast.classList.add("leaving"); }, TOAST_MS);
      setTimeout(function () { toast.remove(); }, TOAST_MS + 400);
    });
  }

  // A finished job's result replaces its progress bar, then clears away like a toast.
  function expireJobResult() {
    var box = document.getElementById("job-progress");
    var result = box && box.querySelector(".job-result:not([data-timer])");
    if (!result) return;
    result.setAttribute("data-timer", "1");
    setTimeout(function () { if (result.isConnected) box.replaceChildren(); }, TOAST_MS * 2);
  }

  function relative(iso) {
    var seconds = (Date.now() - Date.parse(iso)) / 1000;
    var units = [["day", 86400], ["hour", 3600], ["minute", 60]];
    for (var i = 0; i < units.length; i++) {
      if (seconds >= units[i][1]) {
        var n = Math.floor(seconds / units[i][1]);
        return n + " " + units[i][0] + (n === 1 ? "" : "s") + " ago";
      }
    }
    return "just now";
  }

  function refreshTimes() {
    document.querySelectorAll("time.reltime[datetime]").forEach(function (t) {
      t.textContent = relative(t.getAttribute("datetime"));
      t.title = new Date(t.getAttribute("datetime")).toLocaleString();
    });
  }

  document.addEventListener("notification:read", function (e) {
    (e.detail && e.detail.ids || []).forEach(function (id) {
      var row = document.getElementById("notification-" + id);
      if (!row) return;
      row.classList.remove("unread");
      row.classList.add("read");
      var form = row.querySelector("form.mark-read");
      if (form) form.remove();
    });
  });

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (live) {
      live.addEventListener("htmx:wsConnecting", function () { setStatus(false, "Connecting…"); });
      live.addEventListener("htmx:wsClose", function (e) {
        var code = e.detail && e.detail.event && e.detail.event.code;
        setStatus(false, code === 4008 ? "Paused: open in too many tabs" : "Offline");
        if (code === 4001 || code === 4002) window.location.assign("/login?next=" + encodeURIComponent(location.pathname));
      });
      live.addEventListener("htmx:wsAfterMessage", function () {
        var sink = document.getElementById("event-sink");
        if (sink) dispatchCarried(sink);
        var list = document.getElementById("notification-list");
        if (list) dropDuplicateRows(list);
        var box = document.getElementById("toasts");
        if (box) expireToasts(box);
        expireJobResult();
        refreshTimes();
      });
    }
    refreshTimes();
    setInterval(refreshTimes, 30000);
  });
})();
