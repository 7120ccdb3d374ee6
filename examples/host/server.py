#!/usr/bin/env python3
"""A minimal "host product" that embeds Switchyard's tenant UI.

Python 3 standard library only. For every page view it asks Switchyard, from
the server, for a short-lived embed session (with the workspace's secret key,
which never reaches the browser) and frames the launch URL it gets back with
Switchyard's host helper (`/embed/host.js`), which renews the session
through `POST /switchyard/session` before it ends.

    SWITCHYARD_URL=http://127.0.0.1:7600 \
    SWITCHYARD_SECRET_KEY=sk_... \
    python3 examples/host/server.py        # then open http://localhost:8000

Environment:
    SWITCHYARD_URL         where this server reaches Switchyard (default http://127.0.0.1:7600)
    SWITCHYARD_SECRET_KEY  the customer's workspace secret key (required)
    HOST_PORT              port to listen on (default 8000)
    HOST_ORIGIN            this app's origin as browsers see it, allowed to frame
                           the UI (default http://localhost:HOST_PORT)
    SESSION_TTL_SECONDS    embed session lifetime, 1 to 43200 (default 1800)
"""

import html
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from string import Template

SWITCHYARD_URL = os.environ.get("SWITCHYARD_URL", "http://127.0.0.1:7600").rstrip("/")
SECRET_KEY = os.environ.get("SWITCHYARD_SECRET_KEY", "")
PORT = int(os.environ.get("HOST_PORT", "8000"))
ORIGIN = os.environ.get("HOST_ORIGIN", f"http://localhost:{PORT}").rstrip("/")
TTL = int(os.environ.get("SESSION_TTL_SECONDS", "1800"))

PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Settings · Alerts — Acme Monitoring</title>
<style>
  body { margin: 0; font: 15px/1.5 system-ui, sans-serif; color: #1d2330; background: #eef0f4; }
  header { display: flex; align-items: center; gap: 1.5rem; padding: 0 1.5rem; height: 56px; background: #1d2330; color: #fff; }
  header strong { font-size: 1.05rem; }
  header nav a { color: #c9cfdb; text-decoration: none; margin-right: 1rem; }
  .layout { display: flex; min-height: calc(100vh - 56px); }
  aside { width: 200px; padding: 1.5rem 1rem; border-right: 1px solid #d9dde5; background: #f7f8fa; }
  aside a { display: block; padding: .35rem .6rem; border-radius: 6px; color: #4a5263; text-decoration: none; }
  aside a[aria-current] { background: #e3e7f0; color: #1d2330; font-weight: 600; }
  main { flex: 1; padding: 1.5rem; min-width: 0; }
  main h1 { margin: 0 0 .25rem; font-size: 1.4rem; }
  main p { margin: 0 0 1rem; color: #5b6475; }
  #switchyard iframe { border: 1px solid #d9dde5 !important; border-radius: 10px; background: #fff; }
  @media (max-width: 700px) { aside { display: none; } main { padding: .75rem; } }
</style>
</head>
<body>
<header><strong>Acme Monitoring</strong><nav><a href="#">Dashboards</a><a href="#">Alerts</a><a href="#">Settings</a></nav></header>
<div class="layout">
  <aside>
    <a href="#">Profile</a>
    <a href="#">Team</a>
    <a href="#">Billing</a>
    <a href="/" aria-current="page">Alert destinations</a>
  </aside>
  <main>
    <h1>Alert destinations</h1>
    <p>Choose where your alerts go: Slack, email or your own webhook.</p>
    <div id="switchyard" data-src="$src" data-switchyard-origin="$switchyard_origin"></div>
  </main>
</div>
<script src="$switchyard_origin/embed/host.js"></script>
<script>
  // Switchyard's host helper frames the UI, sizes it to its content and
  // renews the session before it ends: onTokenNeeded asks this app's server
  // for a fresh launch token (minted there, like the first one).
  const slot = document.getElementById("switchyard");
  const freshSession = () => fetch("/switchyard/session", { method: "POST" }).then((answer) => {
    if (!answer.ok) throw new Error("could not mint a session");
    return answer.json();
  });
  const mount = (url) => {
    const frame = Switchyard.mount(slot, {
      url,
      theme: "auto",
      onTokenNeeded: async () => (await freshSession()).token,
    });
    // Keep this page's address in step with the view the tenant is on.
    frame.on("navigate", ({ route }) => history.replaceState(null, "", "#alerts/" + route));
    frame.on("connection-changed", ({ connection }) => console.log("destination", connection.type, connection.status));
    // If a renewal could not happen in time, start a new session.
    frame.on("session-expired", async () => {
      const { url } = await freshSession();
      frame.destroy();
      mount(url);
    });
    return frame;
  };
  const frame = mount(slot.dataset.src);
  const start = location.hash.match(/^#alerts[/](.+)$$/);
  if (start) frame.on("ready", () => frame.navigate(start[1]));
</script>
</body>
</html>
""")

ERROR_PAGE = Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Alerts unavailable</title></head>
<body style="font: 15px system-ui, sans-serif; padding: 2rem">
<h1>Alert settings are unavailable right now</h1>
<p>$message</p>
</body></html>
""")


def mint_session():
    """Asks Switchyard for a session that only this app's origin may frame:
    `{"url", "token", "expires_at"}`."""
    body = json.dumps({"ttl_seconds": TTL, "allowed_origins": [ORIGIN]}).encode()
    request = urllib.request.Request(
        f"{SWITCHYARD_URL}/v1/embed/sessions",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {SECRET_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def switchyard_origin(url):
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/":
            self.send_error(404)
            return
        # A real product checks its own login here and picks the secret key of
        # the signed-in customer's workspace (stored server-side).
        try:
            url = mint_session()["url"]
        except (urllib.error.URLError, OSError, KeyError, ValueError) as error:
            self.log_error("minting an embed session failed: %s", error)
            self.reply(502, "text/html", ERROR_PAGE.substitute(message=html.escape(str(error))))
            return
        page = PAGE.substitute(
            src=html.escape(url, quote=True),
            switchyard_origin=html.escape(switchyard_origin(url), quote=True),
        )
        self.reply(200, "text/html", page)

    def do_POST(self):
        if self.path != "/switchyard/session":
            self.send_error(404)
            return
        try:
            session = mint_session()
            answer = {"url": session["url"], "token": session["token"]}
        except (urllib.error.URLError, OSError, KeyError, ValueError) as error:
            self.log_error("minting an embed session failed: %s", error)
            self.reply(502, "application/json", json.dumps({"error": "unavailable"}))
            return
        self.reply(200, "application/json", json.dumps(answer))

    def reply(self, status, content_type, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


def main():
    if not SECRET_KEY.startswith("sk_"):
        sys.exit("set SWITCHYARD_SECRET_KEY to the workspace's secret key (sk_...)")
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    print(f"host product on {ORIGIN} (framing {SWITCHYARD_URL})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
