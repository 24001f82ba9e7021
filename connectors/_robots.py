"""robots.txt for a crawl (RFC 9309), fetched once per site through the same safe fetcher as pages."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

from .safe_http import FetchError, HTTPStatusError, Policy, Refused, fetch

AGENT = "kb"
"""The product token robots.txt rules are matched against (the User-Agent header starts with it)."""
ROBOTS_MAX_BYTES = 512 * 1024
"""RFC 9309 asks crawlers to read at least 500 KiB of a robots.txt; more than that is refused."""


class Robots:
    """Answers "may the crawl fetch this URL?" for any number of sites, asking each site once."""

    def __init__(self, policy: Policy):
        self.policy = replace(policy, max_bytes=ROBOTS_MAX_BYTES)
        self._sites: dict[str, RobotFileParser | str] = {}

    def refusal(self, url: str) -> str | None:
        """Why the crawl may not fetch `url` (None when it may)."""
        parts = urlsplit(url)
        site = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), "", "", ""))
        if site not in self._sites:
            self._sites[site] = self._load(site)
        rules = self._sites[site]
        if isinstance(rules, str):
            return rules
        if not rules.can_fetch(AGENT, url):
            return f"{site}/robots.txt does not allow crawlers to fetch this page"
        return None

    def _load(self, site: str) -> RobotFileParser | str:
        rules = RobotFileParser(f"{site}/robots.txt")
        try:
            response = fetch(f"{site}/robots.txt", self.policy, accept="text/plain, */*;q=0.5")
        except HTTPStatusError as exc:
            if exc.status < 500:
                # No robots.txt (4xx, or a redirect with nowhere to go): RFC 9309 calls it unavailable,
                # and everything may be crawled.
                rules.allow_all = True
                return rules
            return (
                f"{site}/robots.txt answered {exc.status}, which under RFC 9309 means the whole site is "
                "closed to crawlers for now; try again later"
            )
        except Refused as exc:
            return str(exc)  # the site itself is out of bounds: say why in the pages' own words
        except FetchError as exc:
            return f"{site}/robots.txt could not be fetched ({exc}), so the site is treated as closed to crawlers"
        rules.parse(response.body.decode("utf-8", "replace").splitlines())
        rules.modified()  # can_fetch answers False for rules it believes were never read
        return rules
