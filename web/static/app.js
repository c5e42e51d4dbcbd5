// Strata console: small progressive enhancements. Every page works without this file;
// with it, lists update live, deletions ask first, uploads show progress.
(function () {
  "use strict";
  var csrf = document.body.dataset.csrf || "";

  // Every htmx request carries the session's CSRF token.
  document.body.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf;
  });
  // A failed live refresh says so in words.
  document.body.addEventListener("htmx:responseError", function (e) {
    var el = document.getElementById("live-error");
    if (!el) return;
    el.textContent = "Could not refresh (" + e.detail.xhr.status + "): " +
      (e.detail.xhr.statusText || "the node did not answer") + ".";
    el.classList.remove("hidden");
  });
  document.body.addEventListener("htmx:sendError", function () {
    var el = document.getElementById("live-error");
    if (!el) return;
    el.textContent = "The console cannot reach the node; it retries on the next change.";
    el.classList.remove("hidden");
  });
  document.body.addEventListener("htmx:afterSwap", function () {
    var el = document.getElementById("live-error");
    if (el) el.classList.add("hidden");
  });

  // Live updates: the server sends "change" when the cluster's state changed.
  if (window.EventSource && document.querySelector("[data-live]")) {
    var es = new EventSource("/live");
    es.addEventListener("change", function () {
      document.querySelectorAll("[data-live]").forEach(function (el) {
        if (window.htmx) window.htmx.trigger(el, "live");
      });
    });
    // Signing out ends the session too, and the stream says so before the sign-out's
    // own page arrives: that is not an expiry, so the stream closes as the form goes.
    var leaving = false;
    document.querySelectorAll("form[action='/logout']").forEach(function (f) {
      f.addEventListener("submit", function () { leaving = true; es.close(); });
    });
    es.addEventListener("expired", function () {
      es.close();
      if (!leaving) window.location.href = "/login?expired=1";
    });
  }

  // Destructive buttons ask first.
  document.addEventListener("submit", function (e) {
    var f = e.target;
    if (f.dataset && f.dataset.confirm && !window.confirm(f.dataset.confirm)) {
      e.preventDefault();
    }
  }, true);

  // Uploads: record the image, then send the file as the body with a progress bar.
  document.querySelectorAll("form[data-upload]").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var id = form.id;
      var status = document.getElementById(id + "-status");
      var bar = document.getElementById(id + "-progress");
      var file = form.querySelector("input[type=file]").files[0];
      if (!file) { status.textContent = "Choose a file to upload."; return; }
      var fields = new URLSearchParams();
      new FormData(form).forEach(function (v, k) { if (typeof v === "string") fields.append(k, v); });
      status.textContent = "Creating the image...";
      fetch(form.action, {
        method: "POST", body: fields, credentials: "same-origin",
        headers: { "Accept": "application/json", "X-CSRF-Token": csrf }
      }).then(function (r) {
        return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || r.statusText); return j; });
      }).then(function (j) {
        var x = new XMLHttpRequest();
        x.open("PUT", j.upload);
        x.setRequestHeader("X-CSRF-Token", csrf);
        x.setRequestHeader("Content-Type", "application/octet-stream");
        bar.classList.remove("hidden");
        x.upload.onprogress = function (p) {
          if (p.lengthComputable) {
            bar.value = Math.round(p.loaded * 100 / p.total);
            status.textContent = "Uploading: " + bar.value + " %";
          }
        };
        x.onload = function () {
          if (x.status >= 200 && x.status < 300) {
            bar.value = 100;
            status.textContent = "Uploaded.";
            window.location.href = "/images";
          } else {
            var msg = x.statusText;
            try { msg = JSON.parse(x.responseText).error; } catch (_) {}
            status.textContent = "Upload failed: " + msg;
          }
        };
        x.onerror = function () { status.textContent = "Upload failed: the connection broke."; };
        x.send(file);
      }).catch(function (err) { status.textContent = "Could not create the image: " + err.message; });
    });
  });
})();
