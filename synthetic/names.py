"""Small, fixed pools of names, streets, cities and ZIPs for synthetic people (no external data).

Every value here is safe to paste into JSON, CSV and HL7 v2 without escaping: no double quotes,
backslashes or HL7 delimiters (| ^ ~ \\ &). The tests check that.
"""

from __future__ import annotations

import unicodedata

FEMALE_GIVEN = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica",
    "Sarah", "Karen", "Nancy", "Lisa", "Margaret", "Sandra", "Ashley", "Emily", "Donna",
    "Michelle", "Carol", "Amanda", "Melissa", "Deborah", "Stephanie", "Rebecca", "Laura",
    "Maria", "Ana", "Olivia", "Emma", "Ava", "Isabella", "Mia", "Hannah", "Grace", "Keisha",
    "Aisha", "Fatima", "Priya", "Mei", "Yesenia", "Guadalupe", "Latoya", "Ruth", "Joan",
)
MALE_GIVEN = (
    "James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas",
    "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven",
    "Paul", "Andrew", "Joshua", "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald",
    "Carlos", "Juan", "Luis", "Miguel", "Liam", "Noah", "Ethan", "Lucas", "DeShawn", "Tyrone",
    "Mohammed", "Omar", "Raj", "Wei", "Hiroshi", "Kwame", "Dmitri", "Walter", "Harold",
)
# Accented given names, drawn now and then so that every consumer meets non-ASCII text.
FEMALE_ACCENTED = ("Zoë", "Sofía", "Chloé", "Renée", "Inés", "Lucía", "Begoña", "Åsa")
MALE_ACCENTED = ("José", "Jesús", "André", "François", "Jürgen", "Søren", "Ángel", "Nicolás")
MIDDLE_INITIALS = ("A", "B", "C", "D", "E", "F", "G", "H", "J", "K", "L", "M", "N", "P", "R",
                   "S", "T", "W")

FAMILY = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris", "Clark", "Lewis",
    "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen",
    "Hill", "Flores", "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell",
    "Mitchell", "Carter", "Roberts", "Patel", "Kim", "Chen", "Wang", "Cohen", "Kowalski",
    "Nakamura", "Okafor", "O'Brien", "O'Connor", "D'Angelo", "Van der Berg", "Smith-Jones",
)
FAMILY_ACCENTED = (
    "Müller", "Ñúñez", "Pérez", "Sánchez", "Ramírez", "García-López", "Schröder", "Wójcik",
    "Gómez", "Dvořák", "Þórsdóttir", "Côté",
)

STREETS = (
    "Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park",
    "Sunset", "Highland", "Church", "River", "Mill", "Spring", "Ridge", "Meadow", "Franklin",
    "Lincoln", "Jefferson", "Madison", "Chestnut", "Walnut", "Willow", "Harbor", "Prospect",
    "Cherry", "Dogwood", "Magnolia",
)
STREET_SUFFIXES = ("St", "Ave", "Rd", "Ln", "Dr", "Ct", "Blvd", "Way", "Pl", "Ter")
UNITS = ("Apt 1", "Apt 2B", "Apt 3C", "Unit 4", "Apt 12", "Suite 200", "Apt 5A", "#7")

# (city, state, ZIP3 prefixes, area codes). ZIPs are ZIP3 + two digits: real-looking, not
# necessarily deliverable.
CITIES = (
    ("Boston", "MA", ("021", "022"), ("617", "857")),
    ("Worcester", "MA", ("016",), ("508",)),
    ("New York", "NY", ("100", "101"), ("212", "646")),
    ("Brooklyn", "NY", ("112",), ("718", "347")),
    ("Philadelphia", "PA", ("191",), ("215", "267")),
    ("Pittsburgh", "PA", ("152",), ("412",)),
    ("Baltimore", "MD", ("212",), ("410",)),
    ("Atlanta", "GA", ("303",), ("404", "678")),
    ("Miami", "FL", ("331",), ("305", "786")),
    ("Orlando", "FL", ("328",), ("407",)),
    ("Nashville", "TN", ("372",), ("615",)),
    ("Raleigh", "NC", ("276",), ("919",)),
    ("Columbus", "OH", ("432",), ("614",)),
    ("Detroit", "MI", ("482",), ("313",)),
    ("Chicago", "IL", ("606",), ("312", "773")),
    ("Springfield", "IL", ("627",), ("217",)),
    ("Minneapolis", "MN", ("554",), ("612",)),
    ("Kansas City", "MO", ("641",), ("816",)),
    ("Omaha", "NE", ("681",), ("402",)),
    ("Houston", "TX", ("770",), ("713", "832")),
    ("Austin", "TX", ("787",), ("512",)),
    ("San Antonio", "TX", ("782",), ("210",)),
    ("El Paso", "TX", ("799",), ("915",)),
    ("Denver", "CO", ("802",), ("303", "720")),
    ("Albuquerque", "NM", ("871",), ("505",)),
    ("Phoenix", "AZ", ("850",), ("602", "480")),
    ("Tucson", "AZ", ("857",), ("520",)),
    ("Salt Lake City", "UT", ("841",), ("801",)),
    ("Las Vegas", "NV", ("891",), ("702",)),
    ("Los Angeles", "CA", ("900",), ("213", "323")),
    ("San Diego", "CA", ("921",), ("619", "858")),
    ("San José", "CA", ("951",), ("408",)),
    ("Seattle", "WA", ("981",), ("206",)),
    ("Portland", "OR", ("972",), ("503",)),
    ("Honolulu", "HI", ("968",), ("808",)),
    ("Anchorage", "AK", ("995",), ("907",)),
)

# ZIP3 areas with fewer than 20,000 people, which HIPAA Safe Harbor says must be reported as
# 000. A few percent of people live there so that de-identification code gets exercised.
RESTRICTED_ZIP3 = (
    "036", "059", "102", "203", "556", "692", "790", "821", "823", "830", "831", "878", "879",
    "884", "890", "893",
)
RESTRICTED_CITIES = (
    ("Charlestown", "NH", ("036",), ("603",)),
    ("Island Pond", "VT", ("059",), ("802",)),
    ("New York", "NY", ("102",), ("212",)),
    ("Washington", "DC", ("203",), ("202",)),
    ("Grand Marais", "MN", ("556",), ("218",)),
    ("Valentine", "NE", ("692",), ("402",)),
    ("Canyon", "TX", ("790",), ("806",)),
    ("Yellowstone National Park", "WY", ("821",), ("307",)),
    ("Rawlins", "WY", ("823",), ("307",)),
    ("Jackson", "WY", ("830",), ("307",)),
    ("Kemmerer", "WY", ("831",), ("307",)),
    ("Socorro", "NM", ("878",), ("575",)),
    ("Truth or Consequences", "NM", ("879",), ("575",)),
    ("Tucumcari", "NM", ("884",), ("575",)),
    ("Alamo", "NV", ("890",), ("775",)),
    ("Ely", "NV", ("893",), ("775",)),
)

# RFC 2606 reserved domains: nothing generated here can ever reach a real mailbox.
EMAIL_DOMAINS = ("example.com", "example.org", "example.net")

# (BCP-47 code, display, cumulative probability)
LANGUAGES = (
    ("en", "English", 0.80),
    ("es", "Spanish", 0.92),
    ("zh", "Chinese", 0.94),
    ("vi", "Vietnamese", 0.955),
    ("tl", "Tagalog", 0.965),
    ("ar", "Arabic", 0.972),
    ("fr", "French", 0.979),
    ("ko", "Korean", 0.986),
    ("ru", "Russian", 0.992),
    ("pt", "Portuguese", 1.0),
)

# US Core / CDC race and ethnicity (OMB categories), with cumulative probabilities.
RACES = (
    ("2106-3", "White", 0.60),
    ("2054-5", "Black or African American", 0.73),
    ("2028-9", "Asian", 0.79),
    ("1002-5", "American Indian or Alaska Native", 0.80),
    ("2076-8", "Native Hawaiian or Other Pacific Islander", 0.805),
    ("2131-1", "Other Race", 0.96),
    ("UNK", "Unknown", 1.0),
)
ETHNICITIES = (
    ("2135-2", "Hispanic or Latino", 0.18),
    ("2186-5", "Not Hispanic or Latino", 0.97),
    ("UNK", "Unknown", 1.0),
)


def fold(text: str) -> str:
    """ASCII-fold a name the way legacy systems do ("Ñúñez" -> "Nunez", "Søren" -> "Soren")."""
    special = {"ø": "o", "Ø": "O", "å": "a", "Å": "A", "þ": "th", "Þ": "Th", "ł": "l", "Ł": "L"}
    text = "".join(special.get(ch, ch) for ch in text)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def email_key(text: str) -> str:
    """The lower-case letters of a name, as people put them in an email address."""
    return "".join(ch for ch in fold(text).lower() if ch.isalnum())


ALL_NAMES = (
    FEMALE_GIVEN + MALE_GIVEN + FEMALE_ACCENTED + MALE_ACCENTED + FAMILY + FAMILY_ACCENTED
)
# Precomputed once so the per-person cost is a dict lookup, not Unicode normalisation.
FOLDED: dict[str, str] = {name: fold(name) for name in ALL_NAMES}
EMAIL_KEY: dict[str, str] = {name: email_key(name) for name in ALL_NAMES}
