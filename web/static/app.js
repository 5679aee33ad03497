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

// Acknowledgements and desktop notifications. The page tells the server, with
// {"type":"ack","last_id":id} on its socket, the newest notification a person was shown:
// in a visible tab, or as a desktop notification while the tab is in the background. A
// deal no page acknowledged (and nobody read) within EMAIL_ACK_WAIT is emailed; presence
// alone (an open but hidden or half-dead tab) no longer spares the email.
(function () {
  "use strict";

  var ACK_EVERY_MS = 500; // acks are batched: at most two a second
  var DESKTOP_KEY = "notifier.desktop"; // "on", "off" or "dismissed", per browser
  var socket = null; // the ws extension's wrapper: send() queues while reconnecting
  var shown = ""; // newest id shown to a person (ids sort as text: creation order)
  var acked = ""; // newest id sent in an ack on the current socket
  var unseen = ""; // newest id that arrived while nobody could see it
  var timer = null;

  function visible() { return document.visibilityState === "visible"; }

  function flushAck() {
    timer = null;
    if (!socket || !(shown > acked)) return;
    acked = shown;
    socket.send(JSON.stringify({ type: "ack", last_id: acked }));
  }

  function markShown(id) {
    if (!id || !(id > shown)) return;
    shown = id;
    if (!timer) timer = setTimeout(flushAck, ACK_EVERY_MS);
  }

  function stored(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return null; }
  }

  function store(key, value) {
    try { window.localStorage.setItem(key, value); } catch (e) { /* private mode: not kept */ }
  }

  function desktopSupported() { return "Notification" in window; }

  function desktopOn() {
    return desktopSupported() && stored(DESKTOP_KEY) === "on" && Notification.permission === "granted";
  }

  function money(cents) {
    return "$" + Math.floor(cents / 100).toLocaleString("en-US") + "." + String(cents % 100).padStart(2, "0");
  }

  // Clicking a desktop notification brings the tab forward with the notification in view.
  function reveal(id) {
    var row = document.getElementById("notification-" + id);
    if (row && !row.closest("[hidden]")) {
      row.scrollIntoView({ block: "center" });
      row.classList.add("highlight");
      setTimeout(function () { row.classList.remove("highlight"); }, 3000);
    } else if (window.location.pathname !== "/") {
      window.location.assign("/#notification-" + id); // the dashboard lists the newest
    }
  }

  function showDesktop(detail) {
    var body = (detail.deals || []).map(function (d) {
      return d.item_name + " " + money(d.best_price_in_cents) + " at " + d.store_name;
    }).join("\n");
    try {
      var note = new Notification(detail.message || "New deal", {
        body: body,
        tag: "notifier-" + detail.notification_id,
      });
      note.onclick = function () {
        window.focus();
        reveal(detail.notification_id);
        note.close();
      };
      return true;
    } catch (e) {
      return false; // some browsers allow them only from a service worker
    }
  }

  function arrived(e) {
    var id = e.detail && e.detail.notification_id; // announcements have none: not acked
    if (!id) return;
    if (visible()) markShown(id);
    else if (e.type === "notification:deal" && desktopOn() && showDesktop(e.detail)) markShown(id);
    else if (id > unseen) unseen = id;
  }

  ["notification:deal", "notification:system", "notification:job"].forEach(function (name) {
    document.addEventListener(name, arrived);
  });

  document.addEventListener("visibilitychange", function () {
    if (visible() && unseen) markShown(unseen);
  });

  document.addEventListener("htmx:wsOpen", function (e) {
    socket = e.detail && e.detail.socketWrapper;
    acked = ""; // an ack sent into a dying socket may be lost: say it again on this one
    if (shown && !timer) timer = setTimeout(flushAck, ACK_EVERY_MS);
  });

  // The rows a visible page was rendered with were shown too.
  function ackRendered() {
    if (!visible()) return;
    var newest = "";
    document.querySelectorAll("ol.notifications > li[data-id]").forEach(function (row) {
      var id = row.getAttribute("data-id");
      if (id > newest && !row.closest("[hidden]")) newest = id;
    });
    markShown(newest);
  }

  function setupToggle(box) {
    var status = document.getElementById("desktop-status");
    function say(text) { if (status) status.textContent = text; }
    if (!desktopSupported()) {
      box.disabled = true;
      say("This browser cannot show desktop notifications.");
      return;
    }
    box.checked = desktopOn();
    if (Notification.permission === "denied") say("Notifications are blocked for this site in your browser's settings.");
    box.addEventListener("change", function () {
      if (!box.checked) { store(DESKTOP_KEY, "off"); say("Off."); return; }
      enableDesktop(function (ok) {
        box.checked = ok;
        say(ok ? "On: deals show on your desktop while this tab is in the background." : "Your browser did not allow notifications.");
      });
    });
  }

  // Only ever asked from a click (never on page load).
  function enableDesktop(done) {
    Promise.resolve(Notification.requestPermission()).then(function (permission) {
      var ok = permission === "granted";
      if (ok) store(DESKTOP_KEY, "on");
      done(ok);
    }, function () { done(false); });
  }

  function setupPrompt(prompt) {
    var choice = stored(DESKTOP_KEY);
    if (!desktopSupported() || Notification.permission === "denied" || choice === "dismissed" || choice === "off" || desktopOn()) return;
    prompt.hidden = false;
    prompt.querySelector("[data-desktop-enable]").addEventListener("click", function () {
      enableDesktop(function () { prompt.hidden = true; });
    });
    prompt.querySelector("[data-desktop-dismiss]").addEventListener("click", function () {
      store(DESKTOP_KEY, "dismissed");
      prompt.hidden = true;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    ackRendered();
    var box = document.querySelector("[data-desktop-toggle]");
    if (box) setupToggle(box);
    var prompt = document.getElementById("desktop-prompt");
    if (prompt) setupPrompt(prompt);
    var target = /^#notification-(\d+)$/.exec(window.location.hash);
    if (target) reveal(target[1]);
  });
})();

// The inbox's manners (issue 20): the unread count in the tab's title and icon, toasts that
// close and never pile up or cover a form, the watchlist refreshed only when a deal changes
// what it shows, a finished job's "Importing…" cleared, and History's selection.
(function () {
  "use strict";

  var MAX_TOASTS = 3;
  var PHONE = window.matchMedia("(max-width: 600px)");

  // "(3) Dashboard · notifier" and an icon with 3 on it, from the badge the server swaps in.
  function syncUnread() {
    var badge = document.getElementById("unread-badge");
    if (!badge) return;
    var n = parseInt(badge.textContent, 10) || 0;
    var title = document.title.replace(/^\(\d+\+?\) /, "");
    document.title = n > 0 ? "(" + n + ") " + title : title;
    var icon = document.getElementById("favicon");
    var href = "/icons/unread-" + Math.min(n, 100) + ".svg";
    if (icon && icon.getAttribute("href") !== href) icon.setAttribute("href", href);
  }

  function trimToasts() {
    var box = document.getElementById("toasts");
    if (!box) return;
    var toasts = box.querySelectorAll(":scope > .toast");
    for (var i = 0; i < toasts.length - MAX_TOASTS; i++) toasts[i].remove(); // oldest first
  }

  // Forms the dock must not cover: any with a field or button, except the rows' own
  // mark-read buttons (every row has one; History selects rows with its checkboxes).
  function formRects() {
    var rects = [];
    document.querySelectorAll("form").forEach(function (form) {
      if (form.closest("#dock") || form.closest(".notification")) return;
      var r = form.getBoundingClientRect();
      if (r.width > 0 && r.height > 0 && r.bottom > 0 && r.top < window.innerHeight) rects.push(r);
    });
    return rects;
  }

  function overlap(a, b) {
    var w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    var h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    return w > 0 && h > 0 ? w * h : 0;
  }

  // The corner (bottom on phones, else top) that covers the least form: none, as a rule.
  function placeDock() {
    var dock = document.getElementById("dock");
    if (!dock || !dock.querySelector(".toast, .job-progress > *")) return;
    var spots = PHONE.matches ? ["bottom", "top"] : ["bottom-right", "top-right", "bottom-left", "top-left"];
    var forms = formRects();
    var best = null, bestCover = Infinity;
    for (var i = 0; i < spots.length && bestCover > 0; i++) {
      dock.setAttribute("data-spot", spots[i]);
      var box = dock.getBoundingClientRect();
      var cover = forms.reduce(function (sum, r) { return sum + overlap(box, r); }, 0);
      if (cover < bestCover) { best = spots[i]; bestCover = cover; }
    }
    dock.setAttribute("data-spot", best);
  }

  var placing = false;
  function placeSoon() {
    if (placing) return;
    placing = true;
    window.requestAnimationFrame(function () { placing = false; placeDock(); });
  }

  function dismiss(toast) {
    toast.remove();
    placeSoon();
  }

  // A deal changes the watchlist only when its price or store differs from a row's.
  function watchlistStale(detail) {
    var list = document.getElementById("watchlist");
    if (!list || !detail) return false;
    var details = detail.deal_details || [];
    return (detail.deals || []).some(function (d, i) {
      var key = details[i] && details[i].item_key;
      if (!key) return true; // an older notification: cannot tell, so refresh
      var row = null;
      list.querySelectorAll("li.watch[data-item-key]").forEach(function (li) {
        if (li.getAttribute("data-item-key") === key) row = li;
      });
      return !row || row.getAttribute("data-best") !== d.best_price_in_cents + "|" + d.store_name;
    });
  }

  document.addEventListener("notification:deal", function (e) {
    if (watchlistStale(e.detail)) document.dispatchEvent(new CustomEvent("watchlist:stale"));
  });

  // "Importing big.csv…" and "Deal check queued" end with their job.
  document.addEventListener("notification:job", function (e) {
    var job = e.detail && e.detail.job;
    var result = document.getElementById(job === "price-import" ? "import-result" : job === "deal-check" ? "check-result" : "");
    if (result) result.replaceChildren();
    var form = result && result.closest("form");
    if (form && job === "price-import") form.reset();
  });

  function setupSelection(results) {
    var form = document.getElementById("bulk");
    if (!form) return;
    var page = form.querySelector("[data-select-page]");
    var all = document.getElementById("select-page");
    var matching = document.getElementById("select-matching");
    var count = document.getElementById("bulk-count");
    function boxes() { return results.querySelectorAll("input.select[form='bulk']"); }
    function update() {
      var ticked = Array.prototype.filter.call(boxes(), function (b) { return b.checked; }).length;
      if (all) {
        all.checked = ticked > 0 && ticked === boxes().length;
        all.indeterminate = ticked > 0 && ticked < boxes().length;
      }
      count.textContent = matching && matching.checked ? "Every match, on every page" : ticked ? ticked + " selected" : "";
    }
    if (page && boxes().length) page.hidden = false;
    if (all) all.addEventListener("change", function () {
      boxes().forEach(function (b) { b.checked = all.checked; });
      update();
    });
    results.addEventListener("change", function (e) {
      if (e.target.matches("input.select, #select-matching")) update();
    });
    update();
  }

  document.addEventListener("click", function (e) {
    var close = e.target.closest && e.target.closest(".toast-close");
    if (close) dismiss(close.closest(".toast"));
  });

  document.addEventListener("htmx:wsAfterMessage", function () {
    syncUnread();
    trimToasts();
    placeSoon();
  });
  document.addEventListener("htmx:afterSettle", function (e) {
    var results = document.getElementById("history-results");
    if (results && e.target && (e.target === results || e.target.contains(results))) setupSelection(results);
    placeSoon();
  });
  window.addEventListener("scroll", placeSoon, { passive: true });
  window.addEventListener("resize", placeSoon);
  document.addEventListener("focusin", placeSoon);

  document.addEventListener("DOMContentLoaded", function () {
    syncUnread();
    var results = document.getElementById("history-results");
    if (results) setupSelection(results);
    placeSoon();
  });
})();
