"""The lexicons of the lexical guard (gateway.cache.verify): negations, auxiliaries, opposite pairs,
stop words, written numbers and units. Data only."""

from __future__ import annotations

NEGATIONS = frozenset(
    "not no never none nobody nothing nowhere neither nor without cannot cant dont doesnt didnt isnt "
    "arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt neednt".split()
)
AUXILIARIES = frozenset(
    "is are was were be been am can could will would should shall may might must".split()
)
CONTRACTED = AUXILIARIES | {"does", "do", "did", "ca", "wo", "has", "have"}  # "ca" + "nt" = can't
OPPOSITES: tuple[tuple[str, str], ...] = tuple(
    tuple(p.split("/"))  # type: ignore[misc]
    for p in (
        "enable/disable enabled/disabled add/remove added/removed increase/decrease before/after "
        "min/max minimum/maximum buy/sell bought/sold encrypt/decrypt encode/decode compress/decompress "
        "serialize/deserialize upload/download import/export install/uninstall start/stop open/close "
        "show/hide push/pull lock/unlock allow/deny accept/reject include/exclude connect/disconnect "
        "mount/unmount zip/unzip login/logout input/output first/last true/false on/off up/down "
        "above/below inside/outside more/less most/least higher/lower highest/lowest "
        "larger/smaller largest/smallest bigger/smaller biggest/smallest longer/shorter "
        "faster/slower fastest/slowest better/worse best/worst upper/lower ascending/descending "
        "asc/desc left/right top/bottom public/private synchronous/asynchronous sync/async "
        "static/dynamic global/local internal/external read/write client/server send/receive "
        "win/lose success/failure pass/fail valid/invalid positive/negative "
        "hot/cold warm/cool cheap/expensive old/new young/old early/late begin/end "
        "create/delete insert/delete always/never male/female man/woman "
        "men/women boy/girl day/night morning/evening north/south east/west past/future "
        "rise/fall raise/lower gain/loss profit/loss lowercase/uppercase"
    ).split()
)
STOPWORDS = frozenset(
    "a an the and or but if then else of to in on at by for with from into onto about as is are was "
    "were be been being am do does did doing done have has had having i me my mine we us our you your "
    "he him his she her it its they them their this that these those there here what which who whom "
    "whose how can could would should will shall may might must please kindly thanks thank hi hello "
    "hey just so very really also too some any such than s t ll ve re d m o y "
    "tell explain show give help know want need way possible question let like get make use using "
    "one ones something anything thing things someone anyone".split()
)
# "one" is ambiguous (pronoun or number): the number check tolerates it standing alone.
WRITTEN_NUMBERS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split()
    )
} | {
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
    "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1e6", "billion": "1e9",
    "trillion": "1e12", "dozen": "12", "half": "0.5", "twice": "2x", "double": "2x", "triple": "3x",
    "once": "1x", "third": "3rd", "fourth": "4th", "fifth": "5th",
}
UNITS = {
    u: canon
    for canon, forms in {
        "km": "km kms kilometer kilometers kilometre kilometres",
        "mi": "mi mile miles",
        "m": "meter meters metre metres",
        "cm": "cm centimeter centimeters", "mm": "mm millimeter millimeters",
        "ft": "ft foot feet", "in": "inch inches",
        "kg": "kg kgs kilogram kilograms kilo kilos", "g": "gram grams",
        "lb": "lb lbs pound pounds", "oz": "oz ounce ounces",
        "l": "liter liters litre litres", "ml": "ml milliliter milliliters",
        "b": "byte bytes", "kb": "kb kib kilobyte kilobytes", "mb": "mb mib megabyte megabytes",
        "gb": "gb gib gigabyte gigabytes", "tb": "tb tib terabyte terabytes",
        "ms": "ms millisecond milliseconds", "s": "sec secs seconds",
        "min": "mins minute minutes", "h": "hr hrs hour hours", "day": "day days",
        "week": "week weeks", "month": "month months", "year": "year years yr yrs",
        "%": "% percent percentage", "$": "$ usd dollar dollars", "€": "€ eur euro euros",
        "£": "£ gbp sterling", "c": "celsius °c", "f": "fahrenheit °f",
    }.items()
    for u in forms.split()
}
