"""Generate corpora/hydrology/hydrology-lecture-notes.pdf for the sample kb course.

Run from anywhere with the project virtualenv:

    /work/main/.venv/bin/python corpora/make_pdf.py

Each lecture topic is printed on its own A4 page, starts with a heading
line and gets a PDF outline (bookmark) entry. Only the core Helvetica font
is used, so all text must stay within latin-1 (plain quotes and hyphens,
"CO2", "m3").
"""

from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "hydrology" / "hydrology-lecture-notes.pdf"
DOC_TITLE = "The Water Cycle: an introduction to hydrology - Lecture notes"

# One entry per page: (heading, [paragraphs]).
PAGES = [
    (
        "1. Earth's water: reservoirs and residence times",
        [
            "Hydrology is the study of water on the land surface, beneath it and in "
            "the atmosphere, and of how that water moves between these places. The "
            "movement is usually pictured as a cycle of stores (reservoirs that hold "
            "water) linked by fluxes (flows of water from one store to another). At "
            "the scale of the whole planet the water cycle is a closed system: almost "
            "no water arrives from space or is lost to it. The cycle is driven by "
            "energy from the Sun, which lifts water into the air as vapour, and by "
            "gravity, which brings it back down.",
            "The total amount of water on Earth is estimated at about 1.386 billion "
            "cubic kilometres (km3). Roughly 96.5 per cent of it is salt water in the "
            "oceans. Fresh water makes up only about 2.5 per cent of the total, and "
            "most of that is hard to reach: around 69 per cent of all fresh water is "
            "locked up in ice caps, glaciers and permanent snow, chiefly in "
            "Antarctica and Greenland, and about 30 per cent is stored underground as "
            "groundwater. Lakes, rivers, soil moisture, the atmosphere and living "
            "things together hold only about 1 per cent of the fresh water.",
            "A useful way to compare stores is the residence time: the average time "
            "a molecule of water spends in a store before leaving it. It is found by "
            "dividing the volume of the store by the rate at which water flows "
            "through it. Small, fast-moving stores have short residence times and "
            "large, slow ones have long residence times. Approximate values are: "
            "atmosphere, about 9 days; rivers, 2 to 6 months; soil moisture, 1 to 2 "
            "months; seasonal snow cover, 2 to 6 months; large lakes, 50 to 100 "
            "years; shallow groundwater, 100 to 200 years; mountain glaciers, 20 to "
            "100 years; oceans, about 3,200 years; deep groundwater, up to 10,000 "
            "years; and the Antarctic ice sheet, around 20,000 years.",
            "The atmosphere is a tiny store. At any moment it holds only about "
            "12,900 km3 of water, mostly as invisible vapour. If all of it fell as "
            "rain at once it would cover the globe to a depth of only about 25 mm. "
            "It matters because the flux through it is huge: each year roughly half "
            "a million km3 of water evaporates from the oceans and the land. The "
            "oceans lose more water by evaporation than they gain from "
            "precipitation, and the surplus, about 40,000 km3 a year, is carried by "
            "winds over the continents. It falls there as precipitation and returns "
            "to the sea through rivers and groundwater, closing the loop.",
        ],
    ),
    (
        "2. Evaporation and transpiration",
        [
            "Evaporation is the change of liquid water into water vapour. It needs "
            "energy: turning one kilogram of water into vapour at 20 degrees C takes "
            "about 2.45 megajoules, the latent heat of vaporisation. That energy is "
            "carried away with the vapour and released again when the vapour "
            "condenses, so evaporation is also one of the main ways heat is moved "
            "around the planet.",
            "Four things control how fast water evaporates from an open surface. "
            "The first is the supply of energy, mainly solar radiation. The second "
            "is how dry the air is, measured by the vapour pressure deficit: the "
            "difference between the vapour pressure the air could hold at its "
            "temperature and the vapour pressure it actually holds. The third is "
            "wind, which sweeps away the moist air sitting just above the surface "
            "and replaces it with drier air. The fourth is the availability of "
            "water; a wet surface evaporates freely, but a drying soil slows down.",
            "Evaporation from open water can be estimated with an evaporation pan. "
            "The widely used US Class A pan is a round metal pan 121 cm across and "
            "25.4 cm deep, set on a wooden frame just above the ground. The daily "
            "fall in water level, corrected for any rain, gives pan evaporation. "
            "Because a small pan heats up more than a lake, its readings are "
            "multiplied by a pan coefficient, typically about 0.7, to estimate "
            "evaporation from a large water body.",
            "Transpiration is the loss of water vapour from plants. Roots take up "
            "water from the soil; it rises through the xylem and leaves the plant "
            "through stomata, small pores mostly on the underside of leaves. Plants "
            "open their stomata to take in carbon dioxide (CO2) for photosynthesis, "
            "and losing water is the price they pay. They can close the stomata when "
            "water is short, which is why transpiration falls during drought. The "
            "amounts can be large: a single mature oak tree may transpire around "
            "150,000 litres of water in a year. Over the land surface as a whole, "
            "transpiration is thought to make up about 60 per cent of the water "
            "returned to the air.",
            "Because evaporation from soil and wet leaves and transpiration are hard "
            "to separate in the field, hydrologists often combine them as "
            "evapotranspiration. Potential evapotranspiration is the rate that would "
            "occur if water were never in short supply; actual evapotranspiration "
            "is what really happens and is usually lower in dry seasons. A related "
            "process is sublimation, in which snow and ice turn directly into "
            "vapour; it is important on dry, windy, high mountains.",
        ],
    ),
    (
        "3. Condensation, clouds and precipitation",
        [
            "Air can hold only a limited amount of water vapour, and the limit "
            "falls as the air cools. The temperature at which air becomes saturated "
            "is its dew point. Most clouds form when air rises: pressure falls with "
            "height, so rising air expands and cools without exchanging heat with "
            "its surroundings. Unsaturated air cools at the dry adiabatic lapse "
            "rate of about 9.8 degrees C per kilometre. Once it reaches its dew "
            "point and condensation begins, latent heat is released and the air "
            "cools more slowly, at the saturated adiabatic lapse rate of roughly 5 "
            "to 6 degrees C per kilometre near the ground.",
            "Water vapour does not condense easily on its own. It needs tiny "
            "particles called condensation nuclei, such as sea salt, dust, smoke and "
            "sulphate particles, usually well under a micrometre across. A typical "
            "cloud droplet is only about 0.02 mm in diameter, while a typical "
            "raindrop is about 2 mm, so it takes roughly a million cloud droplets to "
            "make one raindrop. Cloud droplets fall so slowly that the smallest "
            "updraft keeps them aloft; they must grow before they can fall as "
            "precipitation.",
            "Two processes make droplets grow. In warm clouds, whose tops stay above "
            "freezing, larger droplets fall faster, collide with smaller ones and "
            "merge: collision and coalescence. In cold clouds the Bergeron (or "
            "Bergeron-Findeisen) process dominates. Ice crystals and supercooled "
            "water droplets exist side by side below 0 degrees C. Because the "
            "saturation vapour pressure over ice is lower than over liquid water, "
            "vapour moves from the droplets to the ice crystals, which grow quickly "
            "into snowflakes. These may melt into rain on the way down.",
            "Meteorologists group precipitation by what makes the air rise. "
            "Convective precipitation comes from air heated at the ground rising in "
            "strong, local currents; it gives short, intense showers and summer "
            "thunderstorms. Frontal (cyclonic) precipitation occurs in mid-latitude "
            "depressions, where warm air is lifted over colder, denser air along a "
            "front, giving longer periods of steadier rain. Orographic precipitation "
            "occurs when moving air is forced up over hills and mountains. The "
            "windward side is wet, and the sheltered lee side, where the air sinks "
            "and warms, lies in a rain shadow. In Britain, western mountains can "
            "receive more than 3,000 mm a year, while parts of eastern England get "
            "less than 600 mm.",
            "Precipitation also takes several forms: rain; drizzle, with drops "
            "smaller than 0.5 mm; snow; sleet; and hail, which grows in layers "
            "inside cumulonimbus clouds with strong updrafts.",
        ],
    ),
    (
        "4. Infiltration, runoff and the storm hydrograph",
        [
            "When rain reaches the ground it may soak in or run off. Infiltration is "
            "the movement of water through the soil surface into the soil. The "
            "infiltration capacity is the maximum rate at which a given soil can "
            "absorb water, usually given in millimetres per hour. It is high when a "
            "storm begins and the soil is dry, and it falls as the soil wets up "
            "towards a steady rate. Robert Horton described this decline with the "
            "equation f = fc + (f0 - fc) e^(-kt), where f0 is the initial rate, fc "
            "the final steady rate and k a decay constant. A sandy soil may accept "
            "more than 25 mm per hour, while a compacted clay may take less than "
            "5 mm per hour. Water that keeps moving downwards towards the "
            "groundwater is said to percolate.",
            "Surface runoff forms in two main ways. Infiltration-excess overland "
            "flow, also called Hortonian flow, happens when rain falls faster than "
            "the infiltration capacity. It is common on bare, crusted or compacted "
            "ground and on roads and roofs. Saturation-excess overland flow happens "
            "when the soil is already saturated, so even gentle rain cannot enter "
            "it. It is common on valley floors and hollows close to streams in "
            "humid regions. Water can also move sideways through the soil above an "
            "impermeable layer as throughflow, reaching the channel more slowly.",
            "A storm hydrograph is a graph of river discharge against time at one "
            "point on a river, usually drawn with a bar chart of the rainfall "
            "above it. Discharge is the volume of water passing per second, "
            "measured in cubic metres per second (cumecs). The hydrograph has a "
            "rising limb, a peak discharge and a falling or recession limb. The "
            "lag time is the time between the peak of rainfall and the peak of "
            "discharge. The flow is divided into quickflow (storm runoff) and the "
            "slower baseflow supplied from groundwater.",
            "The shape of the hydrograph depends on the catchment. Small, steep, "
            "round catchments on impermeable rock give short lag times and high "
            "peaks; large, gently sloping catchments on permeable rock give long, "
            "low hydrographs. Wet antecedent conditions, from earlier rain, also "
            "raise the peak. Urbanisation has a strong effect: roofs, roads and "
            "storm drains send water to the river quickly, so the lag time becomes "
            "shorter and the peak higher, a response described as flashy.",
            "In 1932 L. K. Sherman introduced the unit hydrograph: the hydrograph of "
            "direct runoff produced by one unit of effective rainfall falling evenly "
            "over a catchment in a stated duration. Scaling and adding unit "
            "hydrographs lets engineers predict the response to other storms.",
        ],
    ),
    (
        "5. Groundwater and aquifers",
        [
            "Below the ground surface there are two zones. In the unsaturated (or "
            "vadose) zone the pores hold both air and water. Below it, in the "
            "saturated (or phreatic) zone, every pore is full of water. Water in "
            "the saturated zone is groundwater, and the top of that zone is the "
            "water table.",
            "How much water a rock or sediment can store depends on its porosity: "
            "the volume of open space divided by the total volume, a fraction "
            "between 0 and 1. Typical values are 0.4 to 0.7 for clay, 0.25 to 0.5 "
            "for sand, 0.25 to 0.4 for gravel and less than 0.05 for unfractured "
            "granite. Storing water is not the same as giving "
            "it up. Permeability is the ability of a material to let water pass "
            "through it, and it depends on how large and how well connected the "
            "pores are. Clay has a high porosity but its pores are tiny, so water "
            "is held tightly and moves very slowly: clay has a very low "
            "permeability.",
            "An aquifer is a body of rock or sediment that can both store and "
            "transmit useful amounts of water to wells and springs, such as gravel, "
            "sandstone or chalk. A layer that slows "
            "groundwater flow, such as clay or shale, is an aquitard. An unconfined "
            "aquifer has the water table as its upper surface. A confined aquifer "
            "is sealed between low-permeability layers, and its water is under "
            "pressure. If that pressure can push water above the top of the "
            "aquifer in a well, the well is artesian; if it rises above the ground "
            "surface, the well flows without pumping.",
            "Groundwater flow is described by Darcy's law, published in 1856 by the "
            "French engineer Henry Darcy after experiments on sand filters for the "
            "public fountains of Dijon. It states Q = -K A dh/dl, where Q is the "
            "discharge (m3/s), K is the hydraulic conductivity (m/s), A is the "
            "cross-sectional area of flow (m2) and dh/dl is the hydraulic gradient, "
            "the change in hydraulic head over the flow distance. The minus sign "
            "shows that water flows from high head towards low head. Hydraulic "
            "conductivity ranges enormously, from about 0.001 to 1 m/s for clean "
            "gravel to between 10^-12 and 10^-9 m/s for unweathered clay.",
            "Worked example: a sand aquifer with K = 0.0001 m/s and a flow area of "
            "50 m2 has a head drop of 2 m over 400 m, a gradient of 0.005. Then "
            "Q = 0.0001 x 50 x 0.005 = 0.000025 m3/s, or about 2.2 m3 per day. "
            "When a well is pumped, the water table around it is drawn down into a "
            "cone of depression.",
        ],
    ),
    (
        "6. Humans and the water cycle",
        [
            "People now alter almost every part of the water cycle. About 70 per "
            "cent of all freshwater withdrawals worldwide go to agriculture, mostly "
            "for irrigation. Industry, including cooling water "
            "for power stations, takes about 20 per cent, and municipal supply for "
            "homes and public uses about 12 per cent. Much of the water used for "
            "irrigation is lost to the air by evapotranspiration rather than "
            "returned to rivers.",
            "The Aral Sea in Central Asia shows what over-use can do. Once the "
            "fourth largest lake in the world, it began to shrink in the 1960s after "
            "the Amu Darya and Syr Darya rivers that fed it were diverted to irrigate "
            "cotton. By the 2010s it had lost most of its area, leaving a salty, "
            "dusty former lake bed, a ruined fishing industry and harm to human "
            "health.",
            "Groundwater is also being used faster than it is replaced in many "
            "regions, for example parts of the High Plains (Ogallala) aquifer in "
            "the United States and north-west India. The results include falling "
            "water tables, dry wells, land subsidence as drained sediments compact, "
            "and saline intrusion, where sea water moves inland into coastal "
            "aquifers.",
            "Dams and reservoirs smooth out river flows and store water for dry "
            "seasons, but they trap sediment and increase evaporation losses from "
            "the large water surface. Cities replace soil and vegetation with "
            "impermeable surfaces, so less water infiltrates and more runs off "
            "quickly. Sustainable drainage systems (SuDS), such as permeable "
            "paving, green roofs, swales and ponds, try to copy natural drainage by "
            "slowing and storing runoff. Clearing forests reduces transpiration "
            "and can change rainfall downwind.",
            "Trade moves water invisibly. Virtual water is the water used to "
            "produce a good; about 15,000 litres are needed for 1 kg of beef, "
            "counting the water to grow feed. Climate change adds pressure: by the "
            "Clausius-Clapeyron relation, warmer air can hold about 7 per cent more "
            "water vapour for each degree C of warming, which tends to make heavy "
            "rainfall more intense while higher evaporation makes droughts worse. "
            "Managing water well means looking at whole catchments.",
        ],
    ),
]


class LectureNotes(FPDF):
    def footer(self):
        self.set_y(-15)
        self.set_font("Helvetica", "I", 8)
        self.set_text_color(110, 110, 110)
        self.cell(
            0,
            10,
            f"The Water Cycle: an introduction to hydrology - page {self.page_no()}",
            align="C",
        )


def build(output: Path = OUTPUT) -> Path:
    pdf = LectureNotes(format="A4")
    pdf.set_title(DOC_TITLE)
    pdf.set_author("kb sample course")
    pdf.set_subject("Introductory hydrology: the water cycle")
    pdf.set_keywords("hydrology, water cycle, groundwater, precipitation")
    pdf.set_creator("corpora/make_pdf.py (fpdf2)")
    pdf.set_creation_date(datetime(2024, 1, 1, tzinfo=UTC))
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(True, margin=20)

    for heading, paragraphs in PAGES:
        pdf.add_page()
        pdf.start_section(heading)  # outline / bookmark entry for this page
        pdf.set_font("Helvetica", "B", 16)
        pdf.set_text_color(0, 0, 0)
        pdf.multi_cell(0, 8, heading)
        pdf.ln(3)
        pdf.set_font("Helvetica", "", 10.5)
        for para in paragraphs:
            para.encode("latin-1")  # fail early on characters core fonts lack
            pdf.multi_cell(0, 5.2, para)
            pdf.ln(2.5)

    if pdf.page_no() != len(PAGES):
        raise SystemExit(f"text overflowed: {pdf.page_no()} pages for {len(PAGES)} topics")
    pdf.output(str(output))
    return output


if __name__ == "__main__":
    path = build()
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(PAGES)} pages)")
