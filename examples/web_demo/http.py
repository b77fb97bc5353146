"""The web examples' stand-in for a browser: one JSON POST, its status and answer."""

from __future__ import annotations

import json
import urllib.request


def post(base: str, path: str, body: dict) -> tuple[int, dict]:
    """POST `body` as JSON to `base` + `path`; return the status and the decoded answer."""
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status, json.load(answer)
