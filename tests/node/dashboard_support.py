"""An HTTP client for the dashboard's tests (urllib: a cookie jar, no redirects followed)."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.request
from typing import Any


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Browser:
    """One session on a dashboard at `url`: keeps its cookies and the page's CSRF token."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect)
        self.csrf: str | None = None

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; HTTP errors are answers, not exceptions."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=30) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def page(self) -> str:
        """GET / and keep the CSRF token it carries."""
        status, _, body = self.request("/")
        assert status == 200, body
        text = body.decode()
        self.csrf = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', text).group(1)
        return text

    def get(self, path: str, expect: int = 200) -> Any:
        """GET a JSON answer, checking its status."""
        status, _, body = self.request(path)
        assert status == expect, (status, body)
        return json.loads(body)

    def post(self, path: str, expect: int = 200, csrf: bool = True, **headers: str) -> Any:
        """POST with the page's CSRF token (unless `csrf` is false), checking the status."""
        sent = {"X-CSRF-Token": self.csrf or ""} if csrf else {}
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        status, _, body = self.request(path, "POST", b"", sent)
        assert status == expect, (status, body)
        return json.loads(body)
