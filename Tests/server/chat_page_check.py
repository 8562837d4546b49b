"""Drives `kangaroo serve`'s chat page in headless Chromium through the DevTools protocol: types a
question into the page, presses Enter, waits for the streamed answer and its figures, switches on the
marking of accepted drafts, and saves a screenshot. Usage: chat_page_check.py BASE_URL SCREENSHOT.png"""
import base64, json, re, subprocess, sys, tempfile, time

import websocket

base_url, screenshot = sys.argv[1], sys.argv[2]
profile = tempfile.mkdtemp(prefix="kangaroo-chromium-")
browser = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                            f"--user-data-dir={profile}", "--window-size=900,700", "about:blank"],
                           stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
try:
    deadline = time.time() + 60
    endpoint = None
    while endpoint is None and time.time() < deadline:
        line = browser.stderr.readline()
        match = re.search(r"ws://127\.0\.0\.1:\d+/devtools/browser/\S+", line)
        endpoint = match.group(0) if match else None
    if endpoint is None:
        sys.exit("Chromium did not start")
    port = re.search(r":(\d+)/", endpoint).group(1)
    import urllib.request
    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
    page = next(t for t in targets if t["type"] == "page")
    ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60)
    counter = 0

    def call(method, **params):
        global counter
        counter += 1
        ws.send(json.dumps({"id": counter, "method": method, "params": params}))
        while True:
            message = json.loads(ws.recv())
            if message.get("id") == counter:
                return message.get("result", {})

    def evaluate(expression):
        return call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    call("Page.enable")
    call("Page.navigate", url=base_url + "/")
    while evaluate("document.readyState") != "complete" and time.time() < deadline:
        time.sleep(0.1)
    # Type the question and press Enter, as a person would.
    evaluate("document.getElementById('input').focus()")
    call("Input.insertText", text="Name three fruits.")
    call("Input.dispatchKeyEvent", type="keyDown", key="Enter", code="Enter", windowsVirtualKeyCode=13, text="\r")
    call("Input.dispatchKeyEvent", type="keyUp", key="Enter", code="Enter", windowsVirtualKeyCode=13)
    answer, figures = "", None
    while time.time() < deadline and figures is None:
        time.sleep(0.2)
        answer = evaluate("(document.getElementById('answer-1') || {}).textContent || ''")
        figures = evaluate("(document.getElementById('figures-2') || {}).textContent || null")
    # Switch on the marking of accepted drafts: some of the answer is marked, and only then coloured.
    evaluate("document.getElementById('drafts').click()")
    marked = evaluate("document.querySelectorAll('#answer-1 span.drafted').length")
    colour = evaluate("getComputedStyle(document.querySelector('#answer-1 span.drafted') || document.body).backgroundColor")
    shot = call("Page.captureScreenshot", format="png")
    with open(screenshot, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    question = evaluate("document.querySelector('.message.user') && document.querySelector('.message.user').textContent")
    print(json.dumps({"question": question, "answer": answer, "figures": figures, "drafted spans": marked, "colour": colour}))
    ok = question == "Name three fruits." and len(answer.strip()) > 0 and not answer.startswith("(error") \
        and figures is not None and "tokens/s" in figures \
        and marked > 0 and colour not in ("rgba(0, 0, 0, 0)", "transparent")
    sys.exit(0 if ok else 1)
finally:
    browser.terminate()
    browser.wait(timeout=30)
