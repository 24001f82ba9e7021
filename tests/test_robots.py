"""robots.txt is read as RFC 9309 says, against a real server on 127.0.0.1 (tests/test_web.py's Site).

The two cases urllib.robotparser gets wrong: it applies the first matching rule instead of the
longest, and knows neither `*` nor `$`.
"""

from __future__ import annotations

import pytest
from test_web import Site

from connectors._robots import Robots
from connectors.safe_http import Policy
from tests.helpers import COURSE

CASES = {
    # robots.txt -> {path: allowed}
    "User-agent: *\nDisallow: /\nAllow: /course/\n": {"/course/a.html": True, "/notes.html": False},
    "User-agent: *\nDisallow: /*.pdf$\n": {"/notes.pdf": False, "/notes.pdf.html": True, "/course/a.html": True},
}


@pytest.mark.parametrize("robots_txt", sorted(CASES))
def test_robots_rules_follow_rfc_9309(robots_txt):
    with Site(COURSE) as site:
        site.robots = (200, robots_txt.encode())
        robots = Robots(Policy(allow_private=True, timeout_s=10))
        origin = site.url("")
        answers = {path: robots.refusal(origin + path) is None for path in CASES[robots_txt]}
        assert answers == CASES[robots_txt]
        assert site.paths() == ["/robots.txt"]  # asked once for the site, whatever the number of URLs
        agent = site.requests[0][1]["user-agent"]
    # The User-Agent names this project's own page, not the unrelated `kb` on PyPI.
    assert agent.startswith("kb/") and "https://pypi.org/project/coursekb/" in agent
