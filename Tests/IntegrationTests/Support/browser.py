#!/usr/bin/env python3
"""Drives headless Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe:
commands on the child's fd 3, answers on its fd 4, NUL-terminated JSON), for the status
page's browser test.

    browser.py CHROMIUM BASE_URL OUTDIR [--watch NAME] NAME=PATH...   (the password on stdin)

Logs in through the page's own form, then loads each page at 1280 px and at 390 px wide,
saves OUTDIR/NAME.html (the DOM after the page's script ran, desktop) and full-page
screenshots OUTDIR/NAME-desktop.png, NAME-dark.png (the system in dark mode) and
NAME-phone.png. With --watch NAME, it stays
on that page (a running run) and records the progress events its EventSource receives.
Prints one JSON object: {"login": {...}, "pages": {NAME: {...}}, "watch": [bytes, ...]}.
"""
import base64
import json
import os
import subprocess
import sys
import time


class Browser:
    def __init__(self, chromium, profile):
        import fcntl
        def high(fd):  # above 4, so that moving them to 3 and 4 cannot overwrite one
            h = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
            os.close(fd)
            return h
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        to_child_r, from_child_w = high(to_child_r), high(from_child_w)
        args = ["--headless=new", "--remote-debugging-pipe", "--user-data-dir=" + profile,
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update", "--disable-gpu",
                "--hide-scrollbars", "--mute-audio", "--force-color-profile=srgb", "about:blank"]
        if os.geteuid() == 0:
            args.insert(0, "--no-sandbox")  # Chromium refuses root otherwise
        # The child gets our pipes as fds 3 and 4 (bash moves them there, then execs; dash takes one-digit fds only).
        shell = f'exec 3<&{to_child_r} 4>&{from_child_w} {to_child_r}<&- {from_child_w}>&-; exec "$0" "$@"'
        self.proc = subprocess.Popen(["/bin/bash", "-c", shell, chromium] + args, pass_fds=(to_child_r, from_child_w),
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(profile, "chromium.log"), "wb"))
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf = b""
        self.next_id = 0
        self.events = []
        self.session = None

    def close(self):
        try:
            self.send("Browser.close", session=False, timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def read_message(self, deadline):
        while b"\0" not in self.buf:
            if time.time() > deadline:
                raise TimeoutError("no answer from chromium")
            import select
            r, _, _ = select.select([self.from_child], [], [], max(0.0, deadline - time.time()))
            if not r:
                continue
            chunk = os.read(self.from_child, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed its pipe (see chromium.log in the profile)")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method, params=None, session=True, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self.read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method, timeout=30):
        deadline = time.time() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    del self.events[i]
                    return e
            self.events.append(self.read_message(deadline))

    def attach(self):
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")

    def evaluate(self, expression, timeout=30):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                      timeout=timeout)
        if "exceptionDetails" in r:
            raise RuntimeError(f"script failed: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def load(self, url, timeout=30):
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        self.send("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired", timeout)
        time.sleep(0.3)  # the page's script has run (DOMContentLoaded comes before load)

    def width(self, px, height=900):
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": px, "height": height, "deviceScaleFactor": 1, "mobile": px < 500})

    def screenshot(self, path):
        m = self.send("Page.getLayoutMetrics")
        size = m.get("cssContentSize") or m["contentSize"]
        shot = self.send("Page.captureScreenshot",
                         {"format": "png", "captureBeyondViewport": True,
                          "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}},
                         timeout=60)
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))


def main():
    chromium, base, out = sys.argv[1:4]
    rest = sys.argv[4:]
    watch = None
    if rest[:1] == ["--watch"]:
        watch = rest[1]
        rest = rest[2:]
    pages = [a.split("=", 1) for a in rest]
    password = sys.stdin.read()
    profile = os.path.join(out, "profile")
    os.makedirs(profile, exist_ok=True)
    b = Browser(chromium, profile)
    result = {"pages": {}, "watch": []}
    try:
        b.attach()
        b.width(1280)
        b.load(base + "/login")
        # Through the form, as a person would: the password goes into the field, the form is submitted.
        b.events = [e for e in b.events if e.get("method") != "Page.loadEventFired"]
        b.evaluate("document.getElementById('password').value = " + json.dumps(password) + ";"
                   "document.querySelector('form[action=\"/login\"]').submit(); true")
        b.wait_event("Page.loadEventFired")
        time.sleep(0.3)
        result["login"] = {"url": b.evaluate("location.href"), "title": b.evaluate("document.title")}
        for name, path in pages:
            entry = {}
            b.width(1280)
            b.load(base + path)
            with open(os.path.join(out, name + ".html"), "w") as f:
                f.write(b.evaluate("document.documentElement.outerHTML"))
            entry["title"] = b.evaluate("document.title")
            entry["background"] = b.evaluate("getComputedStyle(document.body).backgroundColor")
            b.screenshot(os.path.join(out, name + "-desktop.png"))
            # The same page with the system in dark mode.
            b.send("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
            entry["dark_background"] = b.evaluate("getComputedStyle(document.body).backgroundColor")
            b.screenshot(os.path.join(out, name + "-dark.png"))
            b.send("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "light"}]})
            b.width(390)
            b.load(base + path)
            entry["phone_overflow"] = b.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
            b.screenshot(os.path.join(out, name + "-phone.png"))
            result["pages"][name] = entry
            if name == watch:
                b.width(1280)
                b.load(base + path)
                deadline = time.time() + 60
                seen = []
                while time.time() < deadline:
                    seen = b.evaluate("window.relayProgressSeen || []") or []
                    ended = b.evaluate("window.relayProgressEnded === true")
                    if len(seen) >= 2 and seen[-1] > seen[0] or ended:
                        break
                    time.sleep(0.25)
                result["watch"] = seen
    finally:
        b.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
