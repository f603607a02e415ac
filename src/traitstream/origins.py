"""Which web origins may call the edge's ingestion routes (``TRAITSTREAM_CORS_ORIGINS``).

A plain value, read by the settings (to refuse a bad list at start) and by the edge's
CORS middleware (``edge.cors``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AllowedOrigins:
    """The origins whose pages may call the ingestion routes: any, or a list."""

    any: bool
    origins: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> AllowedOrigins:
        """``*`` (any origin) or a comma-separated list such as
        ``https://shop.example.com,https://www.example.com``."""
        items = [item.strip().rstrip("/") for item in text.split(",") if item.strip()]
        if not items:
            raise ValueError("the CORS origins are empty; give * (any) or a comma-separated list")
        if items == ["*"]:
            return cls(True, frozenset())
        if "*" in items:
            raise ValueError("the CORS origins mix * with a list; give * alone, or only the list")
        for item in items:
            scheme, sep, host = item.partition("://")
            if not sep or not scheme or not host or any(c in host for c in "/?#"):
                raise ValueError(
                    f"the CORS origin {item!r} is not an origin; write it as scheme://host[:port]"
                )
        return cls(False, frozenset(_normal(item) for item in items))

    def allows(self, origin: str) -> bool:
        return self.any or _normal(origin) in self.origins


_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _normal(origin: str) -> str:
    """Origins compare without case, without a trailing slash, and without their
    scheme's default port (a browser never sends ``https://x.com:443``)."""
    text = origin.strip().rstrip("/").lower()
    scheme = text.partition("://")[0]
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and text.endswith(default):
        text = text[: -len(default)]
    return text
