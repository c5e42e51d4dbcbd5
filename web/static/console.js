// The serial console: xterm.js over a websocket. Output arrives as binary frames; what
// the user types is sent as text (members and admins only).
(function () {
  "use strict";
  var el = document.getElementById("terminal");
  if (!el || !window.Terminal) return;
  var term = new window.Terminal({ convertEol: false, scrollback: 5000, fontSize: 14 });
  var fit = window.FitAddon ? new window.FitAddon.FitAddon() : null;
  if (fit) term.loadAddon(fit);
  term.open(el);
  if (fit) { fit.fit(); window.addEventListener("resize", function () { fit.fit(); }); }
  // For tests and screen readers: the whole buffer as text.
  window.strataConsoleText = function () {
    var b = term.buffer.active, out = [];
    for (var i = 0; i < b.length; i++) out.push(b.getLine(i).translateToString(true));
    return out.join("\n");
  };
  var proto = location.protocol === "https:" ? "wss://" : "ws://";
  var ws = null, retry = 1000;
  function connect() {
    ws = new WebSocket(proto + location.host + el.dataset.ws);
    ws.binaryType = "arraybuffer";
    ws.onopen = function () { retry = 1000; };
    ws.onmessage = function (m) {
      term.write(typeof m.data === "string" ? m.data : new Uint8Array(m.data));
    };
    ws.onclose = function () {
      term.write("\r\n[disconnected; reconnecting]\r\n");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    };
  }
  connect();
  if (el.dataset.write === "true") {
    term.onData(function (d) { if (ws && ws.readyState === 1) ws.send(d); });
  }
})();
