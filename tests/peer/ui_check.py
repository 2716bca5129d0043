#!/usr/bin/env python3
"""Drives scimtap's live view in headless Chromium for tests/it/ui.rs.

Debian's own Chromium (/usr/bin/chromium, installed by scripts/setup.sh --test-peers) through
Playwright for Python (tests/peer/requirements.txt); Playwright's own browser download is never
used. The Rust test says what to do, one JSON command per line on stdin, and changes the world
in between (replays traffic, kills the upstream); each command is answered with one JSON line on
stdout: {"ok": true, ...} or {"ok": false, "error": "...", "screenshot": PATH}. A failed
command leaves a screenshot of the page behind, so the failure can be seen.

Usage:
    ui_check.py BASE_URL TOKEN_FILE ARTIFACTS_DIR [--chromium PATH]

The main page is opened with the token as an `Authorization: Bearer` header on every request
(the event stream too). `anonymous` and `login` use fresh contexts without it.

Commands ({"do": NAME, ...}; every wait is bounded by "timeout" seconds, default 20):
    open {path}                   -> {status, url}
    mark / marked                 set window.__scimtapMark; -> {marked}: false after a reload
    wait_text {selector, text}    until the element's text contains `text`
    texts {selector}              -> {texts}: textContent of every match
    fill {selector, value} / select {selector, value}
    click {selector}              and wait for the navigation it starts, if any -> {url}
    screenshot {name}             -> {path}: ARTIFACTS_DIR/NAME.png (full page)
    console                       -> {errors}: console errors and page errors so far (CSP too)
    anonymous {path}              a fresh context, no token -> {status, www_authenticate}
    login {path}                  a fresh context: sign in at /login with the token -> {status, url, title}
    quit
"""

import argparse
import json
import os
import sys
import traceback

from playwright.sync_api import sync_playwright


def answer(payload):
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("token_file")
    parser.add_argument("artifacts")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    base = args.base.rstrip("/")
    with open(args.token_file, encoding="utf-8") as f:
        token = f.read().strip()
    os.makedirs(args.artifacts, exist_ok=True)
    errors = []

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=args.chromium,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            timeout=60_000,
        )
        context = browser.new_context(
            extra_http_headers={"Authorization": f"Bearer {token}"},
            viewport={"width": 1400, "height": 900},
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        def shot(name):
            path = os.path.join(args.artifacts, f"{name}.png")
            page.screenshot(path=path, full_page=True)
            return path

        answer({"ok": True, "ready": True})
        failures = 0
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            cmd = json.loads(line)
            what = cmd.get("do")
            timeout_ms = int(float(cmd.get("timeout", 20)) * 1000)
            try:
                if what == "quit":
                    answer({"ok": True})
                    break
                elif what == "open":
                    response = page.goto(base + cmd["path"], timeout=timeout_ms)
                    answer({"ok": True, "status": response.status if response else None, "url": page.url})
                elif what == "mark":
                    page.evaluate("() => { window.__scimtapMark = 'still here'; }")
                    answer({"ok": True})
                elif what == "marked":
                    marked = page.evaluate("() => window.__scimtapMark === 'still here'")
                    answer({"ok": True, "marked": marked})
                elif what == "wait_text":
                    page.wait_for_function(
                        "([sel, text]) => { const el = document.querySelector(sel);"
                        " return !!el && el.textContent.includes(text); }",
                        arg=[cmd["selector"], cmd["text"]],
                        timeout=timeout_ms,
                    )
                    answer({"ok": True})
                elif what == "texts":
                    texts = page.eval_on_selector_all(
                        cmd["selector"], "els => els.map(e => e.textContent)"
                    )
                    answer({"ok": True, "texts": texts})
                elif what == "fill":
                    page.fill(cmd["selector"], cmd["value"], timeout=timeout_ms)
                    answer({"ok": True})
                elif what == "select":
                    page.select_option(cmd["selector"], cmd["value"], timeout=timeout_ms)
                    answer({"ok": True})
                elif what == "click":
                    with page.expect_navigation(timeout=timeout_ms):
                        page.click(cmd["selector"], timeout=timeout_ms)
                    page.wait_for_load_state("domcontentloaded", timeout=timeout_ms)
                    answer({"ok": True, "url": page.url})
                elif what == "screenshot":
                    answer({"ok": True, "path": shot(cmd["name"])})
                elif what == "console":
                    answer({"ok": True, "errors": errors})
                elif what == "anonymous":
                    bare = browser.new_context()
                    other = bare.new_page()
                    response = other.goto(base + cmd["path"], timeout=timeout_ms)
                    path = os.path.join(args.artifacts, "unauthorized.png")
                    other.screenshot(path=path, full_page=True)
                    headers = response.headers if response else {}
                    answer({
                        "ok": True,
                        "status": response.status if response else None,
                        "www_authenticate": headers.get("www-authenticate"),
                        "path": path,
                    })
                    bare.close()
                elif what == "login":
                    bare = browser.new_context()
                    other = bare.new_page()
                    other.goto(base + cmd.get("path", "/login"), timeout=timeout_ms)
                    other.fill("input[name=token]", token, timeout=timeout_ms)
                    with other.expect_navigation(timeout=timeout_ms):
                        other.click("button[type=submit]", timeout=timeout_ms)
                    again = other.goto(base + "/gaps", timeout=timeout_ms)
                    path = os.path.join(args.artifacts, "signed-in.png")
                    other.screenshot(path=path, full_page=True)
                    answer({
                        "ok": True,
                        "status": again.status if again else None,
                        "url": other.url,
                        "title": other.title(),
                        "path": path,
                    })
                    bare.close()
                else:
                    answer({"ok": False, "error": f"unknown command {what!r}"})
            except Exception as error:  # the test prints it, with a screenshot
                failures += 1
                detail = "".join(traceback.format_exception_only(type(error), error)).strip()
                try:
                    path = shot(f"failed-{failures}-{what}")
                except Exception:
                    path = None
                answer({"ok": False, "error": detail, "screenshot": path, "url": page.url})
        browser.close()


if __name__ == "__main__":
    main()
