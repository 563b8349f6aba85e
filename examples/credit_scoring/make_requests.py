"""Generate ``sample_requests.jsonl``: realistic credit applications from synthetic people.

    python -m examples.credit_scoring.make_requests

Why synthetic and why this shape: the demo, the tests and the benchmarks need many applications that look like
real traffic (names from many origins, e-mail addresses on ordinary and unusual top-level domains such as
``.example``, ``.internal`` or ``.io`` that Presidio's e-mail recognizer misses, US phone numbers in the
formats people type, street addresses with ZIP codes, free-text notes that sometimes carry someone's contact
details), without any real person's data in the repository. Every value is invented:

* phone numbers use the 555-0100..555-0199 block reserved for fiction;
* SSNs use area numbers 900-999, which the SSA never issues (they look valid to a recognizer, so redaction is
  still exercised), with group and serial never zero;
* e-mail domains are reserved (``example.com``, ``.example``) or fictional;
* the model features, sex, race and age (hence the date of birth) come from rows of the committed UCI Adult
  sample, so scores and the fairness picture are those of real census records.

About a third of the notes carry a name, phone number, e-mail or address inside a 100-250 character sentence;
the others are neutral; a few applications have no note. Fixed seed, standard library only, so the file is
reproducible (a test checks it).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import random
import unicodedata
from pathlib import Path
from typing import Any, Final

from examples.credit_scoring.model import HERE, SAMPLE_CSV, features_from_row

OUT: Final = HERE / "sample_requests.jsonl"
SEED: Final = 1996
N_REQUESTS: Final = 150
N_PII_NOTES: Final = 50
N_NO_NOTE: Final = 6
N_SEX_MISSING: Final = 5
#: Dates of birth are drawn so that the applicant's age on this day equals the age in the census row.
REFERENCE_DATE: Final = dt.date(2026, 11, 1)

FIRST_NAMES_FEMALE: Final = [
    "Maria", "Aisha", "Mei", "Olivia", "Priya", "Fatima", "Sofia", "Hannah", "Yuki", "Amara", "Elena",
    "Grace", "Lucía", "Chloé", "Ngozi", "Ingrid", "Leila", "Thu", "Rosa", "Keisha", "Anya", "Zoë", "Camila",
    "Deborah", "Emily", "Jasmine", "Svetlana", "Ava", "Noor", "Patricia",
]
FIRST_NAMES_MALE: Final = [
    "James", "Mohammed", "Wei", "Carlos", "Rahul", "Kwame", "Liam", "David", "Hiroshi", "Mateo", "Ivan",
    "Omar", "José", "Daniel", "Tariq", "Chen", "Andre", "Lars", "Samuel", "Dmitri", "Michael", "Jamal", "Raj",
    "Kenji", "Robert", "Ethan", "Diego", "Emeka", "Thomas", "Minh",
]
LAST_NAMES: Final = [
    "Garcia", "Okafor", "Nguyen", "Smith", "Patel", "Kowalski", "Hernández", "Kim", "Johnson", "Haddad",
    "O'Brien", "Tanaka", "Müller", "Rossi", "Williams", "Mensah", "Chen", "Ivanova", "Brown", "Singh",
    "Lefebvre", "Jackson", "Nakamura", "Abdullah", "Martinez", "Andersson", "Davis", "Popescu", "Wong",
    "Begay", "Fitzgerald", "Yilmaz", "Cohen", "Reyes", "Kaur", "Schmidt", "Thompson", "Osei", "Lopez",
    "Petrov",
]
EMAIL_DOMAINS: Final = [
    "example.com", "example.org", "example.net", "mail.example", "corp.internal", "acme.io", "inbox.example",
    "contoso.com", "fabrikam.com", "northwind.example", "bluebird.co", "lumen.dev", "hq.internal",
    "post.example.co.uk", "startup.io", "kitemail.app",
]
#: (area code, city, state, ZIP prefix): real area codes and ZIP prefixes of the city, exchange 555 (fiction).
PLACES: Final = [
    ("212", "New York", "NY", "100"), ("312", "Chicago", "IL", "606"), ("415", "San Francisco", "CA", "941"),
    ("617", "Boston", "MA", "021"), ("713", "Houston", "TX", "770"), ("206", "Seattle", "WA", "981"),
    ("404", "Atlanta", "GA", "303"), ("305", "Miami", "FL", "331"), ("602", "Phoenix", "AZ", "850"),
    ("303", "Denver", "CO", "802"), ("503", "Portland", "OR", "972"), ("612", "Minneapolis", "MN", "554"),
    ("215", "Philadelphia", "PA", "191"), ("702", "Las Vegas", "NV", "891"),
    ("505", "Albuquerque", "NM", "871"), ("615", "Nashville", "TN", "372"), ("808", "Honolulu", "HI", "968"),
    ("907", "Anchorage", "AK", "995"), ("313", "Detroit", "MI", "482"),
    ("801", "Salt Lake City", "UT", "841"),
]
STREETS: Final = [
    "Maple", "Oak", "Cedar", "Elm", "Washington", "Lincoln", "Park", "Lakeview", "Hillcrest", "Sunset",
    "Riverside", "Jefferson", "Magnolia", "Willow", "Franklin", "Highland", "Chestnut", "Mill", "Pine",
    "Adams",
]
STREET_TYPES: Final = [
    "St", "Ave", "Rd", "Blvd", "Dr", "Ln", "Ct", "Way", "Street", "Avenue", "Place",
]

# Notes with personal data. Placeholders: {name} the applicant, {other} a third person, {phone}, {email},
# {address}. Each renders to 100-250 characters (checked in build_requests).
PII_NOTES: Final = [
    (
        "Applicant asked that the decision letter go to their sister {other} at {address} while they travel"
        " for work."
    ),
    (
        "Please call back on {phone} after 5pm; the applicant says the number on file is a work line they "
        "rarely check."
    ),
    (
        "Co-signer {other} ({email}) will send the last two pay stubs; applicant confirmed the employer "
        "details today."
    ),
    (
        "Branch visit: {name} brought proof of address for {address} and asked whether a joint application "
        "would help."
    ),
    (
        "Reached {name} at {phone} to confirm income; overtime is seasonal, roughly six weeks a year, per "
        "the applicant."
    ),
    (
        "Updated contact e-mail is {email}, the old one bounced. Applicant prefers written communication, "
        "no calls."
    ),
    (
        "Landlord reference {other}, phone {phone}, confirmed twenty-two months of on-time rent at the "
        "current flat."
    ),
    (
        "Employer HR contact {other} can be reached at {email} to verify employment and the current annual "
        "salary."
    ),
    (
        "Mail returned from {address}; the unit number was missing, and the applicant asked us to resend "
        "the documents."
    ),
    "Spoke with {name} about the requested amount. Prefers a callback at {phone} or an e-mail to {email}.",
    (
        "Guarantor {other} lives at {address} and has agreed in writing to co-sign; their ID copy is in the"
        " file."
    ),
    (
        "The applicant's accountant, {other}, sent the tax return from {email} and can answer questions "
        "about it."
    ),
]
NEUTRAL_NOTES: Final = [
    (
        "Applicant requested a credit line increase to consolidate two existing balances; no recent late "
        "payments."
    ),
    (
        "Income verified from the last three pay stubs and one bank statement. Four years with the same "
        "employer."
    ),
    (
        "First-time applicant with a thin credit file. Asked about secured card options if this application"
        " fails."
    ),
    (
        "Application submitted online outside branch hours; all mandatory fields done and documents "
        "uploaded same day."
    ),
    (
        "Requested amount is for a used vehicle; dealer quote attached. Applicant plans a down payment of "
        "about 20%."
    ),
    "Existing customer for six years, checking and savings in good standing; asked for a decision by Friday.",
    (
        "Self-reported rent and utilities are consistent with the bank statement provided. No discrepancies"
        " noted."
    ),
    "Moving from part-time to full-time hours next month; asked whether an updated offer letter would help.",
    (
        "Loan purpose: home repairs after storm damage, insurance claim pending. Contractor estimate is "
        "uploaded."
    ),
    "Seasonal business income, higher in summer months. Two years of returns provided to show the average.",
    (
        "Asked for a shorter term with higher monthly payments to reduce total interest. Reviewer found no "
        "issues."
    ),
    (
        "Applicant would like to refinance an existing store card at a lower rate. Statements for twelve "
        "months attached."
    ),
    "Documents complete. Applicant mentioned a planned career change next year but expects similar income.",
    "Wants the funds for tuition and course materials; enrolment confirmation from the college is attached.",
]
#: Some notes run longer: these are appended to a base note when it stays within 250 characters.
NOTE_TAILS: Final = [
    " Follow up within two business days if anything else is needed.",
    " Reviewer: no concerns beyond the standard checks.",
    " Customer was polite and patient throughout the call.",
]


def _ascii(text: str) -> str:
    """E-mail local parts in ASCII: 'Zoë Müller' -> 'zoe', 'muller'; apostrophes dropped."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and c.isalnum()).lower()


def _person(rng: random.Random, sex: str) -> tuple[str, str]:
    pool = FIRST_NAMES_FEMALE if sex == "Female" else FIRST_NAMES_MALE
    return rng.choice(pool), rng.choice(LAST_NAMES)


def _full_name(rng: random.Random, first: str, last: str) -> str:
    if rng.random() < 0.15:
        return f"{first} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {last}"
    return f"{first} {last}"


def _email(rng: random.Random, first: str, last: str) -> str:
    f, la = _ascii(first), _ascii(last)
    patterns = [f"{f}.{la}", f"{f[0]}{la}", f"{f}_{la}{rng.randint(1, 99)}"]
    patterns += [f"{f}{rng.randint(70, 99)}", f"{la}.{f[0]}"]
    return f"{rng.choice(patterns)}@{rng.choice(EMAIL_DOMAINS)}"


def _phone(rng: random.Random, area: str) -> str:
    line = f"01{rng.randint(0, 99):02d}"
    return rng.choice([
        f"({area}) 555-{line}", f"{area}-555-{line}", f"{area}.555.{line}", f"+1 {area} 555 {line}",
        f"{area}555{line}", f"+1-{area}-555-{line}",
    ])


def _ssn(rng: random.Random) -> str:
    area, group, serial = rng.randint(900, 999), rng.randint(1, 99), rng.randint(1, 9999)
    return f"{area}{group:02d}{serial:04d}" if rng.random() < 0.1 else f"{area}-{group:02d}-{serial:04d}"


def _address(rng: random.Random, place: tuple[str, str, str, str]) -> str:
    _, city, state, zip3 = place
    apt, unit = f" Apt {rng.randint(1, 40)}", f" Unit {rng.randint(1, 9)}{rng.choice('ABC')}"
    suffix = rng.choice(["", "", "", apt, unit])
    street = f"{rng.randint(2, 9899)} {rng.choice(STREETS)} {rng.choice(STREET_TYPES)}{suffix}"
    return f"{street}, {city}, {state} {zip3}{rng.randint(1, 99):02d}"


def _dob(rng: random.Random, age: int) -> str:
    """A birth date such that the person is exactly ``age`` on REFERENCE_DATE."""
    latest = REFERENCE_DATE.replace(year=REFERENCE_DATE.year - age)
    earliest = REFERENCE_DATE.replace(year=REFERENCE_DATE.year - age - 1) + dt.timedelta(days=1)
    return (earliest + dt.timedelta(days=rng.randint(0, (latest - earliest).days))).isoformat()


def _note(rng: random.Random, kind: str, fill: dict[str, str]) -> str | None:
    if kind == "none":
        return None
    text = rng.choice(PII_NOTES if kind == "pii" else NEUTRAL_NOTES).format(**fill)
    tail = rng.choice(NOTE_TAILS)
    if rng.random() < 0.5 and len(text) + len(tail) <= 250:
        text += tail
    if not 100 <= len(text) <= 250:
        raise ValueError(f"note template renders to {len(text)} characters, outside 100-250: {text[:40]}...")
    return text


def build_requests(sample: Path = SAMPLE_CSV, n: int = N_REQUESTS, seed: int = SEED) -> list[dict[str, Any]]:
    """The request bodies, deterministic for a given sample file and seed."""
    rng = random.Random(seed)
    with sample.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    picked = rng.sample(range(len(rows)), n)
    kinds = ["pii"] * N_PII_NOTES + ["none"] * N_NO_NOTE + ["neutral"] * (n - N_PII_NOTES - N_NO_NOTE)
    rng.shuffle(kinds)
    no_sex = set(rng.sample(range(n), N_SEX_MISSING))

    requests: list[dict[str, Any]] = []
    for k, i in enumerate(picked):
        row = rows[i]
        first, last = _person(rng, row["sex"])
        name = _full_name(rng, first, last)
        place = rng.choice(PLACES)
        phone = _phone(rng, place[0])
        email = _email(rng, first, last)
        address = _address(rng, place)
        other_first, other_last = _person(rng, rng.choice(["Female", "Male"]))
        fill = {
            "name": name,
            "other": f"{other_first} {other_last}",
            # In a note the phone, e-mail or address may be the applicant's or a third person's.
            "phone": phone if rng.random() < 0.6 else _phone(rng, rng.choice(PLACES)[0]),
            "email": email if rng.random() < 0.5 else _email(rng, other_first, other_last),
            "address": address if rng.random() < 0.6 else _address(rng, rng.choice(PLACES)),
        }
        applicant: dict[str, str] = {
            "id": f"APP-26{137 * k + rng.randint(0, 136):06d}",
            "name": name,
            "email": email,
            "phone": phone,
            "ssn": _ssn(rng),
            "address": address,
            "dob": _dob(rng, int(row["age"])),
        }
        if k not in no_sex:
            applicant["sex"] = row["sex"]
        applicant["race"] = row["race"]
        body: dict[str, Any] = {"applicant": applicant, "features": features_from_row(row)}
        note = _note(rng, kinds[k], fill)
        if note is not None:
            body["note"] = note
        requests.append(body)
    return requests


def write_requests(out: Path = OUT) -> int:
    """Write one JSON object per line (UTF-8, non-ASCII kept as is); returns the number of lines."""
    requests = build_requests()
    with out.open("w", encoding="utf-8", newline="\n") as fh:
        for body in requests:
            fh.write(json.dumps(body, ensure_ascii=False) + "\n")
    return len(requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    n = write_requests(args.out)
    print(f"wrote {n} requests to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
