"""Generate the sample course's slide deck and Word handout (corpora/hydrology/*.pptx, *.docx).

Run from the repository root with the project virtualenv:

    .venv/bin/python corpora/make_office.py

The output is byte-for-byte reproducible: core-properties dates are fixed and the archives are
rewritten with fixed entry timestamps. The deck (a guest lecture on snow and ice) has speaker notes
that carry facts found nowhere else, a table, a group of text boxes and one hidden (backup) slide;
the handout (the soils practical) has a Title, headings two levels deep, a numbered and a bulleted
list and a table. All text was written for kb (CC BY 4.0, like the rest of the course).
"""

from __future__ import annotations

import io
import zipfile
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
DECK = HERE / "hydrology" / "snow-and-ice-lecture.pptx"
HANDOUT = HERE / "hydrology" / "handout-soil-moisture-and-infiltration.docx"
AUTHOR = "The Water Cycle course team"
WHEN = datetime(2024, 9, 2, 9, 0, 0)
FIXED_ZIP_TIME = (2024, 9, 2, 9, 0, 0)

# (title, body paragraphs, speaker notes). A body of None is laid out by code in make_deck.
SLIDES = [
    (
        "Snow and ice: the frozen stores",
        ["The Water Cycle: an introduction to hydrology", "Guest lecture"],
        "This guest lecture picks up the ice caps and glaciers from the first lecture: the largest store of "
        "fresh water, and the one that feeds many of the world's rivers in summer.",
    ),
    (
        "Snowpack and snow water equivalent",
        [
            "Hydrologists care about how much water a snowpack holds, not how deep it is.",
            "Snow water equivalent (SWE) is the depth of water the pack would give if it all melted: "
            "SWE = snow depth x snow density / density of water.",
            "Snow becomes denser as it settles, melts and refreezes, so the same water can lie as a deep, "
            "fluffy layer or a thin, hard one.",
        ],
        "Snow water equivalent can be measured without digging: a snow pillow is a flat bladder filled with "
        "antifreeze that lies on the ground under the pack, and the pressure of the fluid rises with the "
        "weight of the snow on top of it, which is the water the pack holds.",
    ),
    (
        "What melts snow: the energy balance",
        [
            "Melting 1 kg of ice at 0 degrees C takes 334 kJ of energy, the latent heat of fusion.",
            "Sunlight: fresh snow reflects 80 to 90 per cent of it (its albedo), old dirty snow about half, "
            "and bare glacier ice only 30 to 40 per cent.",
            "Warm air gives sensible heat, and water vapour condensing on the snow gives latent heat, which "
            "is why a warm, humid wind melts snow so fast.",
            "Rain on snow adds heat and water at once and can cause sudden floods.",
        ],
        "Ask the class why dust or soot on snow speeds up melting: it lowers the albedo.",
    ),
    (
        "The degree-day model",
        [
            "Energy-balance measurements are rare in the mountains, so melt is usually estimated from air "
            "temperature alone.",
            "Daily melt M = DDF x (T - T0) when the day's mean temperature T is above a threshold T0, "
            "usually 0 degrees C; below it there is no melt.",
            "The degree-day factor DDF is typically 3 to 5 mm of water per degree C per day for snow, and "
            "larger for bare ice, which is darker and absorbs more sunlight.",
        ],
        "The model needs only a thermometer, which is why it is still the workhorse of snowmelt forecasting.",
    ),
    (
        "Glaciers and their mass balance",
        None,  # three text boxes in one group
        "A glacier with a negative mass balance still flows downhill: the ice keeps moving forward even "
        "while the snout retreats, because melting at the front outpaces the flow.",
    ),
    (
        "River regimes fed by snow and ice",
        [
            "A nival (snowmelt) regime peaks in late spring and early summer, when the seasonal snowpack melts.",
            "A glacial regime peaks later, in mid to late summer, once the snow has gone and bare ice melts.",
            "Glacier-fed streams also rise and fall every day with the daily cycle of melting.",
            "Peak water: as a glacier shrinks, its meltwater runoff first rises, then falls for good once "
            "the ice area has become too small.",
        ],
        "The daily high flow of a glacier-fed stream comes in the late afternoon or evening, several hours "
        "after the warmest part of the day, because meltwater takes time to pass through and under the "
        "glacier. Plan any stream crossing for the early morning, when the flow is lowest.",
    ),
    (
        "Backup: a worked degree-day example",
        [
            "A snowpack holds 120 mm of water (SWE). The degree-day factor is 4 mm per degree C per day and "
            "the threshold is 0 degrees C.",
            "On a day with a mean temperature of 6 degrees C the model melts 4 x (6 - 0) = 24 mm of water.",
            "If every day is that warm, the pack is gone in 120 / 24 = 5 days.",
        ],
        "Hidden slide: show it if the class asks for numbers.",
    ),
    (
        "Summary",
        [
            "Snow water equivalent, not snow depth, is the water a snowpack holds.",
            "Melt is driven by the energy balance; the degree-day model estimates it from temperature.",
            "Glaciers gain mass above the equilibrium line and lose it below.",
            "Snow and ice delay runoff from winter to summer, and shrinking glaciers will change that.",
        ],
        "Next week: water quality.",
    ),
]
DENSITY_SLIDE = "Snowpack and snow water equivalent"
DENSITY_TABLE = [
    ("Snow or ice", "Density (kg/m3)", "Depth that holds 10 mm of water"),
    ("Fresh snow", "100", "100 mm"),
    ("Settled snow", "300", "33 mm"),
    ("Firn", "600", "17 mm"),
    ("Glacier ice", "917", "11 mm"),
]
HIDDEN_SLIDE = 7
GLACIER_BOXES = (
    (
        "Accumulation zone",
        "Above the equilibrium line more snow falls each year than melts; it is buried "
        "and compacted, through firn, into glacier ice.",
    ),
    (
        "Ablation zone",
        "Below the equilibrium line melting, evaporation and the calving of icebergs remove more than falls.",
    ),
    (
        "Equilibrium line",
        "The equilibrium line altitude (ELA) is where a year's accumulation equals its "
        "ablation. The glacier's mass balance, in metres of water equivalent, is the year's gain minus its loss "
        "over the whole glacier.",
    ),
)


def make_deck() -> bytes:
    from pptx import Presentation
    from pptx.util import Inches, Pt

    prs = Presentation()
    title_slide, title_and_content, title_only = prs.slide_layouts[0], prs.slide_layouts[1], prs.slide_layouts[5]
    for number, (title, body, notes) in enumerate(SLIDES, start=1):
        if number == 1:
            layout = title_slide
        elif title == DENSITY_SLIDE or body is None:
            layout = title_only  # text boxes and a table placed by hand
        else:
            layout = title_and_content
        slide = prs.slides.add_slide(layout)
        slide.shapes.title.text = title
        if number == 1:
            slide.placeholders[1].text = "\n".join(body)
        elif body is None:
            group = slide.shapes.add_group_shape()
            for i, (heading, text) in enumerate(GLACIER_BOXES):
                box = group.shapes.add_textbox(Inches(0.4 + 3.1 * i), Inches(1.8), Inches(2.9), Inches(4.5))
                frame = box.text_frame
                frame.word_wrap = True
                frame.text = heading
                frame.paragraphs[0].runs[0].font.bold = True
                frame.add_paragraph().text = text
        elif layout is title_only:
            box = slide.shapes.add_textbox(Inches(0.5), Inches(1.4), Inches(9), Inches(2.6))
            box.text_frame.word_wrap = True
            box.text_frame.text = body[0]
            for paragraph in body[1:]:
                box.text_frame.add_paragraph().text = paragraph
            for paragraph in box.text_frame.paragraphs:
                paragraph.runs[0].font.size = Pt(16)
            rows, cols = len(DENSITY_TABLE), len(DENSITY_TABLE[0])
            table = slide.shapes.add_table(rows, cols, Inches(0.8), Inches(4.3), Inches(8.4), Inches(2.2)).table
            for r, row in enumerate(DENSITY_TABLE):
                for c, value in enumerate(row):
                    table.cell(r, c).text = value
        else:
            frame = slide.placeholders[1].text_frame
            frame.text = body[0]
            for paragraph in body[1:]:
                frame.add_paragraph().text = paragraph
        slide.notes_slide.notes_text_frame.text = notes
        if number == HIDDEN_SLIDE:
            slide._element.set("show", "0")
    props = prs.core_properties
    props.title = "Snow and ice: the frozen stores"
    props.author = AUTHOR
    props.subject = "The Water Cycle: an introduction to hydrology, guest lecture"
    props.last_modified_by = AUTHOR
    props.revision = 1
    props.created = props.modified = props.last_printed = WHEN
    out = io.BytesIO()
    prs.save(out)
    return stable_zip(out.getvalue())


# (heading level, heading) or (style, text): the handout in order; "table" marks where the table goes.
HANDOUT_BLOCKS = [
    (0, "Handout: measuring soil moisture and infiltration"),
    (
        "Normal",
        "This handout goes with the soils practical of The Water Cycle: an introduction to hydrology. It "
        "explains how to measure the water held in a soil and how fast a soil takes in water at its surface.",
    ),
    (1, "Why measure soil water?"),
    (
        "Normal",
        "Soil water decides what happens to rain. A dry soil soaks up a storm and little reaches the river; "
        "a wet soil cannot, and the same storm gives a flood. Soil water is also what plants draw on between "
        "rains, so farmers and ecologists want to know how much is left.",
    ),
    (1, "Soil moisture"),
    (2, "The gravimetric method"),
    (
        "Normal",
        "The gravimetric method is slow but needs no calibration, so every other method is checked against it:",
    ),
    ("List Number", "Take a soil sample with a corer and seal it in a tin at once, so no water evaporates."),
    ("List Number", "Weigh the tin and the wet soil as soon as you are back in the laboratory."),
    ("List Number", "Dry the open tin in an oven at 105 degrees C for 24 hours, until its mass stops falling."),
    ("List Number", "Weigh it again; subtract the mass of the empty tin from both weighings."),
    (
        "Normal",
        "The gravimetric water content is the mass of water lost divided by the mass of the dry soil.",
    ),
    (2, "From gravimetric to volumetric water content"),
    (
        "Normal",
        "Hydrologists want the volume of water in a volume of soil, because that converts directly to a "
        "depth of water. The volumetric water content is the gravimetric water content multiplied by the "
        "soil's dry bulk density (dry mass divided by the volume of the core) and divided by the density of "
        "water. Mineral soils have bulk densities between about 1.1 and 1.6 g/cm3. Three samples taken on "
        "the practical, from a soil with a bulk density of 1.3 g/cm3, gave:",
    ),
    "table",
    (
        "Normal",
        "So the top 10 cm of that soil held a quarter of its volume as water: 25 mm of water in 100 mm of soil.",
    ),
    (2, "Electronic sensors"),
    (
        "Normal",
        "Time domain reflectometry (TDR) probes send an electromagnetic pulse along metal rods pushed into "
        "the soil and time its return. The pulse slows down in wet soil because the relative permittivity "
        "of water is about 80, while that of dry mineral soil is only 3 to 5 and that of air is 1. A "
        "calibration equation, such as Topp's, turns the measured permittivity into volumetric water "
        "content. Sensors left in the ground record the soil drying and wetting every few minutes.",
    ),
    (1, "Infiltration"),
    (2, "The double-ring infiltrometer"),
    (
        "Normal",
        "An infiltrometer measures how fast water soaks into the soil surface. The double-ring type has two "
        "metal rings, commonly 30 cm and 60 cm across, pushed 5 to 10 cm into the ground one inside the "
        "other and both kept topped up with water. Only the fall of the water in the inner ring is "
        "measured. Water from the outer ring soaks the soil around the inner one, so water from the inner "
        "ring cannot spread sideways and the inner ring measures downward infiltration only.",
    ),
    (2, "Reading the results"),
    (
        "Normal",
        "Record the fall of the water level in the inner ring every few minutes at first and less often "
        "later, and convert each reading to a rate in mm per hour. The rate falls as the soil wets up and "
        "levels off after an hour or two; that steady rate is the final infiltration capacity of Horton's "
        "equation in the lecture notes. Compare it with rainfall intensities to judge when overland flow "
        "will start.",
    ),
    (1, "Field capacity and wilting point"),
    (
        "Normal",
        "After a soaking, water drains out of the larger pores under gravity for a day or two. What the "
        "soil then still holds is its field capacity. Plants can draw water out until the remaining water "
        "is held at a suction of about 1,500 kPa, the permanent wilting point. The difference between the "
        "two is the available water capacity: the store plants can use between rains.",
    ),
    (1, "Before you go"),
    ("List Bullet", "Label every tin with the site, depth and time before you fill it."),
    ("List Bullet", "Take three samples at each depth: soil water varies a lot over a few metres."),
    ("List Bullet", "Carry 25 litres of water per infiltrometer test; the outer ring uses most of it."),
    ("List Bullet", "Backfill every hole and leave the site as you found it."),
]
MOISTURE_TABLE = [
    ("Sample", "Wet soil (g)", "Dry soil (g)", "Gravimetric content", "Volumetric content"),
    ("A", "152.0", "128.0", "0.19", "0.24"),
    ("B", "140.5", "115.0", "0.22", "0.29"),
    ("C", "160.0", "136.0", "0.18", "0.23"),
    ("Mean", "", "", "0.20", "0.25"),
]


def make_handout() -> bytes:
    from docx import Document

    doc = Document()
    for block in HANDOUT_BLOCKS:
        if block == "table":
            table = doc.add_table(rows=len(MOISTURE_TABLE), cols=len(MOISTURE_TABLE[0]))
            table.style = "Table Grid"
            for r, row in enumerate(MOISTURE_TABLE):
                for c, value in enumerate(row):
                    table.cell(r, c).text = value
        elif isinstance(block[0], int):
            doc.add_heading(block[1], level=block[0])
        else:
            doc.add_paragraph(block[1], style=block[0])
    props = doc.core_properties
    props.title = "Handout: measuring soil moisture and infiltration"
    props.author = AUTHOR
    props.subject = "The Water Cycle: an introduction to hydrology, soils practical"
    props.last_modified_by = AUTHOR
    props.revision = 1
    props.created = props.modified = props.last_printed = WHEN
    out = io.BytesIO()
    doc.save(out)
    return stable_zip(out.getvalue())


def stable_zip(data: bytes) -> bytes:
    """The same archive with fixed entry timestamps, so regenerating gives identical bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            info = zipfile.ZipInfo(entry.filename, date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            target.writestr(info, source.read(entry))
    return out.getvalue()


def main() -> None:
    DECK.write_bytes(make_deck())
    HANDOUT.write_bytes(make_handout())
    print(f"wrote {DECK.relative_to(HERE.parent)} and {HANDOUT.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
