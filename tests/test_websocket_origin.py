"""WebSockets open only from the console's own origin: scheme, host and port must match
(config/websocket_origin.py)."""

from __future__ import annotations

from django.test import override_settings

from config.websocket_origin import allowed


def _scope(origin: str | None, host: str = "127.0.0.1:8000", scheme: str = "ws") -> dict[str, object]:
    headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin is not None else [])
    return {"type": "websocket", "scheme": scheme, "headers": headers}


def test_only_the_same_origin_opens_a_socket() -> None:
    assert allowed(_scope("http://127.0.0.1:8000"))
    assert not allowed(_scope("http://127.0.0.1:9000"))  # another service on the same host
    assert not allowed(_scope("https://127.0.0.1:8000"))  # another scheme
    assert not allowed(_scope("http://localhost:8000"))  # another host name
    assert not allowed(_scope("http://evil.test:8000"))
    assert not allowed(_scope(None))  # browsers always send an Origin
    assert not allowed(_scope("null"))
    # A name that resolves to us (DNS rebinding) is same-origin to itself, but not an allowed host.
    assert not allowed(_scope("http://evil.test:8000", host="evil.test:8000"))
    assert allowed(_scope("https://127.0.0.1:8000", scheme="wss"))


@override_settings(HTTPS=True, ALLOWED_HOSTS=["console.example.test"], CSRF_TRUSTED_ORIGINS=["https://console.example.test"])
def test_behind_a_tls_proxy_the_page_is_https() -> None:
    assert allowed(_scope("https://console.example.test", host="console.example.test"))
    assert not allowed(_scope("http://console.example.test", host="console.example.test"))
