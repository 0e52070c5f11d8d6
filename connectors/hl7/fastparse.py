"""Fast HL7 v2 parsing by plain string splitting, with the delimiters each message declares.

Segments are split into fields only when the mapping first asks for them, and a field is
split into repetitions/components/subcomponents on each `get`, because the mapping reads a
handful of fields out of messages that often carry dozens of segments. Values are unescaped
(\\F\\ \\S\\ \\T\\ \\R\\ \\E\\, \\X..\\ hex, \\H\\/\\N\\ highlighting dropped) after splitting, so
escaped delimiters never split a value. Unknown or unterminated escape sequences stay literal.
"""

from __future__ import annotations

from typing import NamedTuple

from connectors.hl7.errors import Hl7Error


class Delimiters(NamedTuple):
    """The encoding characters from MSH-1 and MSH-2."""

    field: str
    comp: str
    rep: str
    esc: str
    sub: str


_DELIMITER_CACHE: dict[str, Delimiters] = {}


def delimiters_of(msh: str) -> Delimiters:
    """parse_delimiters, cached: a feed declares the same few delimiter sets in every message."""
    key = msh[3:9]
    found = _DELIMITER_CACHE.get(key)
    if found is not None:
        return found
    d = parse_delimiters(msh)
    # Cacheable only when MSH-2 is exactly four characters: then these six characters
    # (separator, MSH-2, separator) decide the result on their own.
    if key[5:6] == key[:1] and len(_DELIMITER_CACHE) < 64:
        _DELIMITER_CACHE[key] = d
    return d


def parse_delimiters(msh: str) -> Delimiters:
    """Read MSH-1 (field separator) and MSH-2 (component, repetition, escape, subcomponent).

    A fifth MSH-2 character (the v2.7 truncation character) is accepted and ignored. All
    delimiters must be distinct printable punctuation: a letter, digit or blank would make
    every later split ambiguous.
    """
    if len(msh) < 8 or not msh.startswith("MSH"):
        raise Hl7Error("HL7_BAD_DELIMITERS", "MSH-1/MSH-2", "encoding characters missing")
    field = msh[3]
    encoding = msh[4:].split(field, 1)[0]
    if len(encoding) not in (4, 5):
        raise Hl7Error("HL7_BAD_DELIMITERS", "MSH-2", "needs 4 encoding characters")
    chars = field + encoding
    if len(set(chars)) != len(chars):
        raise Hl7Error("HL7_BAD_DELIMITERS", "MSH-1/MSH-2", "encoding characters repeat")
    for char in chars:
        if char.isalnum() or char.isspace() or not char.isprintable():
            raise Hl7Error(
                "HL7_BAD_DELIMITERS", "MSH-1/MSH-2", "encoding characters must be punctuation"
            )
    comp, rep, esc, sub = encoding[:4]
    return Delimiters(field, comp, rep, esc, sub)


def _hex(payload: str) -> str | None:
    """\\Xhhhh\\ payload -> text (UTF-8, else Latin-1), or None when not even-length hex."""
    # isalnum() first: bytes.fromhex() would also accept blanks between the hex pairs.
    if not payload or len(payload) % 2 or not (payload.isascii() and payload.isalnum()):
        return None
    try:
        data = bytes.fromhex(payload)
    except ValueError:  # letters beyond F
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _sequence(seq: str, d: Delimiters) -> str | None:
    """The text an escape sequence stands for, or None when the hub does not interpret it."""
    if len(seq) == 1:
        return {
            "F": d.field,
            "S": d.comp,
            "T": d.sub,
            "R": d.rep,
            "E": d.esc,
            "H": "",  # highlight on/off: formatting only, no content
            "N": "",
        }.get(seq)
    if seq[:1] == "X":  # a slice: two adjacent escape characters give an empty sequence
        return _hex(seq[1:])
    return None


def unescape(value: str, d: Delimiters) -> str:
    """Resolve HL7 escape sequences in one (already split) value."""
    esc = d.esc
    out: list[str] = []
    i = 0
    while True:
        start = value.find(esc, i)
        end = value.find(esc, start + 1) if start >= 0 else -1
        if end < 0:  # no (complete) sequence left: the rest is literal
            out.append(value[i:])
            return "".join(out)
        out.append(value[i:start])
        text = _sequence(value[start + 1 : end], d)
        out.append(value[start : end + 1] if text is None else text)
        i = end + 1


class FastSegment:
    """One segment. Its fields are split on first access; `_fields[n]` is HL7 field n (raw)."""

    __slots__ = ("_comp", "_esc", "_fields", "_raw", "_rep", "_sub", "d", "name")

    def __init__(self, name: str, raw: str, d: Delimiters) -> None:
        self.name = name
        self.d = d
        self._raw = raw
        self._fields: list[str] | None = None
        # Plain attributes: measurably faster than NamedTuple property access in `get`.
        self._comp, self._rep, self._esc, self._sub = d.comp, d.rep, d.esc, d.sub

    def _split(self) -> list[str]:
        self._fields = self._raw.split(self.d.field)
        return self._fields

    def _clean(self, value: str) -> str:
        """First subcomponent, unescaped, stripped; the HL7 null '""' becomes ""."""
        if self._sub in value:
            value = value.split(self._sub, 1)[0]
        if self._esc in value:
            value = unescape(value, self.d)
        value = value.strip()
        return "" if value == '""' else value

    def get(self, field: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
        try:
            value = (self._fields or self._split())[field]
        except IndexError:  # zero-cost on the common path, unlike a len() check
            return ""
        if not value:
            return ""
        if self._rep in value:
            parts = value.split(self._rep)
            if rep > len(parts):
                return ""
            value = parts[rep - 1]
        elif rep != 1:
            return ""
        if self._comp in value:
            parts = value.split(self._comp)
            if comp > len(parts):
                return ""
            value = parts[comp - 1]
        elif comp != 1:
            return ""
        if self._sub in value:
            parts = value.split(self._sub)
            if sub > len(parts):
                return ""
            value = parts[sub - 1]
        elif sub != 1:
            return ""
        if self._esc in value:
            value = unescape(value, self.d)
        value = value.strip()
        return "" if value == '""' else value

    def comps(self, field: int, rep: int = 1, width: int = 1) -> list[str]:
        # One split for several components: the mapping reads most fields this way.
        try:
            value = (self._fields or self._split())[field]
        except IndexError:
            return [""] * width
        if self._rep in value:
            parts = value.split(self._rep)
            value = parts[rep - 1] if rep <= len(parts) else ""
        elif rep != 1:
            value = ""
        if not value:
            return [""] * width
        parts = value.split(self._comp)
        if len(parts) > width:
            del parts[width:]
        elif len(parts) < width:
            parts.extend([""] * (width - len(parts)))
        if self._sub in value or self._esc in value or '"' in value:
            return [self._clean(part) for part in parts]
        # Stripping every part costs a call each. For printable text the only blank is " ",
        # so if no " " touches a separator or an end, no part has anything to strip.
        if value.isprintable() and (
            " " not in value
            or not (
                value[0] == " "
                or value[-1] == " "
                or f" {self._comp}" in value
                or f"{self._comp} " in value
            )
        ):
            return parts
        return [part.strip() for part in parts]

    def values(self, fields: tuple[int, ...]) -> list[str]:
        # get(f) for several fields in one call: the loop body is get() without its
        # repetition/component/subcomponent arguments, which are all 1 here.
        split = self._fields or self._split()
        n = len(split)
        rep, comp, sub, esc = self._rep, self._comp, self._sub, self._esc
        out = []
        for field in fields:
            value = split[field] if field < n else ""
            if value:
                if rep in value:
                    value = value.split(rep, 1)[0]
                if comp in value:
                    value = value.split(comp, 1)[0]
                if sub in value:
                    value = value.split(sub, 1)[0]
                if esc in value:
                    value = unescape(value, self.d)
                value = value.strip()
                if value == '""':
                    value = ""
            out.append(value)
        return out

    def reps(self, field: int) -> int:
        try:
            value = (self._fields or self._split())[field]
        except IndexError:
            return 0
        return value.count(self._rep) + 1 if value else 0

    def raw(self, field: int) -> str:
        """Field `field` exactly as sent (still escaped), "" when absent."""
        fields = self._fields if self._fields is not None else self._split()
        return fields[field] if field < len(fields) else ""


class FastMsh(FastSegment):
    """MSH: field 1 is the separator itself and field 2 the encoding characters, both literal."""

    __slots__ = ()

    def _split(self) -> list[str]:
        # Re-insert MSH-1 so that list index == HL7 field number, as for other segments.
        parts = self._raw.split(self.d.field)
        parts.insert(1, self.d.field)
        self._fields = parts
        return parts

    def get(self, field: int, comp: int = 1, sub: int = 1, rep: int = 1) -> str:
        if field <= 2:
            fields = self._fields if self._fields is not None else self._split()
            return fields[field] if comp == sub == rep == 1 and field < len(fields) else ""
        return FastSegment.get(self, field, comp, sub, rep)

    def comps(self, field: int, rep: int = 1, width: int = 1) -> list[str]:
        if field <= 2:
            return [self.get(field, 1, 1, rep), *[""] * (width - 1)]
        return FastSegment.comps(self, field, rep, width)

    def values(self, fields: tuple[int, ...]) -> list[str]:
        if 1 in fields or 2 in fields:
            return [self.get(field) for field in fields]
        return FastSegment.values(self, fields)

    def reps(self, field: int) -> int:
        if field <= 2:
            return 1
        return FastSegment.reps(self, field)


def _segment_id(segment: str, sep: str) -> str:
    """The id of a segment whose fourth character is not the separator (short or malformed)."""
    return segment.split(sep, 1)[0]


class FastMessage:
    """A parsed message: raw segments with their ids, FastSegment objects built on demand.

    Blank or whitespace-only segments are kept under their (blank) id: nothing looks them up,
    and skipping them would cost a pass over every message.
    """

    __slots__ = ("_built", "_names", "_raw", "d")

    def __init__(self, raw: list[str], d: Delimiters) -> None:
        self.d = d
        self._raw = raw
        self._built: list[FastSegment | None] = [None] * len(raw)
        sep = d.field
        # Segment ids are three characters; anything else is named up to the separator.
        self._names = [seg[:3] if seg[3:4] == sep else _segment_id(seg, sep) for seg in raw]

    def _segment(self, i: int) -> FastSegment:
        built = self._built[i]
        if built is None:
            name = self._names[i]
            kind = FastMsh if name == "MSH" else FastSegment
            built = self._built[i] = kind(name, self._raw[i], self.d)
        return built

    def segments(self) -> list[FastSegment]:
        return [self._segment(i) for i in range(len(self._raw))]

    def all(self, name: str) -> list[FastSegment]:
        names = self._names
        if names.count(name) < 2:  # the usual case, answered by C-level scans
            return [self._segment(names.index(name))] if name in names else []
        return [self._segment(i) for i, found in enumerate(names) if found == name]

    def first(self, name: str) -> FastSegment | None:
        # A list scan beats a dict here: messages hold a handful of segments and most are
        # looked up once, so building an index would cost more than it saves. `in` first,
        # because a missing segment is common and index() would raise.
        names = self._names
        return self._segment(names.index(name)) if name in names else None


def parse(text: str) -> FastMessage:
    """Parse one message (segments separated by CR, first segment MSH)."""
    if not text.startswith("MSH"):
        raise Hl7Error("HL7_MISSING_MSH", "MSH", "message does not start with an MSH segment")
    raw = text.split("\r")
    return FastMessage(raw, delimiters_of(raw[0]))
