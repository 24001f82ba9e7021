"""kb.SectionBuilder, the one heading stack the structured connectors share."""

from __future__ import annotations

import pytest

from kb import Locator, Section, SectionBuilder, SourceError


def test_a_heading_closes_those_at_its_level_and_deeper():
    builder = SectionBuilder()
    builder.open_heading(1, "Rivers", "rivers")
    builder.add("Intro.")
    builder.open_heading(2, "Gauging", None)  # no anchor of its own: links to its parent's
    builder.open_heading(3, "Weirs", "weirs")
    builder.add("A weir.", page=4)
    builder.open_heading(2, "Floods", "floods")
    builder.add("  \n")  # blank text makes no section
    builder.add("x = 1", code=True)
    builder.open_heading(1, "")  # an empty heading only closes
    builder.add("Outside.")
    assert builder.sections == [
        Section("Intro.", Locator(heading="Rivers", anchor="rivers")),
        Section("A weir.", Locator(page=4, heading="Rivers > Gauging > Weirs", anchor="weirs")),
        Section("x = 1", Locator(heading="Rivers > Floods", anchor="floods"), code=True),
        Section("Outside.", Locator()),
    ]
    assert (builder.first_heading(), builder.first_heading(2), builder.first_heading(4)) == ("Rivers", "Gauging", None)


def test_a_heading_without_an_anchor_takes_the_nearest_one():
    builder = SectionBuilder()
    builder.open_heading(1, "Rivers", "rivers")
    builder.open_heading(2, "Gauging")
    assert (builder.heading, builder.anchor) == ("Rivers > Gauging", "rivers")


def test_the_text_limit():
    builder = SectionBuilder(max_chars=10)
    builder.count(10)
    with pytest.raises(SourceError, match=r"^too much text \(over 10 characters\)$"):
        builder.count(1)
    SectionBuilder().count(10**12)  # no limit given, none applied
