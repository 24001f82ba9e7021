"""robots.txt for a crawl (RFC 9309), fetched once per site through the same safe fetcher as pages.

Parsed by Protego, not `urllib.robotparser`, which gets RFC 9309 wrong both ways: it applies the
first matching rule instead of the longest (so `Disallow: /` before `Allow: /course/` refuses
/course/a.html) and knows no `*` or `$` (so `Disallow: /*.pdf$` lets /notes.pdf through).
"""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

from protego import Protego

from .safe_http import PRODUCT, FetchError, HTTPStatusError, Policy, Refused, fetch

AGENT = PRODUCT
"""The product token robots.txt rules are matched against (the User-Agent header starts with it)."""
ROBOTS_MAX_BYTES = 512 * 1024
"""RFC 9309 asks crawlers to read at least 500 KiB of a robots.txt; more than that is refused."""


class Robots:
    """Answers "may the crawl fetch this URL?" for any number of sites, asking each site once."""

    def __init__(self, policy: Policy):
        self.policy = replace(policy, max_bytes=ROBOTS_MAX_BYTES)
        self._sites: dict[str, Protego | str | None] = {}  # rules, a refusal, or None: no robots.txt

    def refusal(self, url: str) -> str | None:
        """Why the crawl may not fetch `url` (None when it may)."""
        parts = urlsplit(url)
        site = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), "", "", ""))
        if site not in self._sites:
            self._sites[site] = self._load(site)
        rules = self._sites[site]
        if isinstance(rules, str):
            return rules
        if rules is not None and not rules.can_fetch(url, AGENT):
            return f"{site}/robots.txt does not allow crawlers to fetch this page"
        return None

    def _load(self, site: str) -> Protego | str | None:
        try:
            response = fetch(f"{site}/robots.txt", self.policy, accept="text/plain, */*;q=0.5")
        except HTTPStatusError as exc:
            if exc.status < 500:
                # No robots.txt (4xx, or a redirect with nowhere to go): RFC 9309 calls it unavailable,
                # and everything may be crawled.
                return None
            return (
                f"{site}/robots.txt answered {exc.status}, which under RFC 9309 means the whole site is "
                "closed to crawlers for now; try again later"
            )
        except Refused as exc:
            return str(exc)  # the site itself is out of bounds: say why in the pages' own words
        except FetchError as exc:
            return f"{site}/robots.txt could not be fetched ({exc}), so the site is treated as closed to crawlers"
        return parse_robots(response.body.decode("utf-8", "replace"))


def parse_robots(text: str) -> Protego:
    """A robots.txt's rules, matched as RFC 9309 says (the longest matching path wins, `*` and `$`)."""
    return Protego.parse(text)
