"""SMTP relay adapter: the hub renders and sends each message itself through a relay.

An EmailEngine like the others: `upsert` sends the audience's message to every member it
has not been sent to yet (idempotent per audience x member, and per idempotency key), so a
retried or resumed batch never mails anyone twice; `remove` stops further sends; `events`
reads the adapter's own event stream (sends, tracked opens/clicks/unsubscribes, bounces
from DSNs).

Every message:
- goes over STARTTLS or implicit TLS with a verified certificate (connectors/email/
  smtp_transport.py; a relay without STARTTLS is refused, never used in plaintext);
- is DKIM-signed (dkimpy) over From, To, Subject, Date, Message-ID and both
  List-Unsubscribe headers, as RFC 8058 requires for one-click;
- has its own Message-ID, `List-Unsubscribe` (https one-click URL, optional mailto) and
  `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, and an opaque `X-Hub-Ref`;
- links and the open pixel go through the tracking endpoint with signed, expiring tokens:
  no address, no person token and no PHI in any URL (connectors/email/tracking.py).

Encryption policy per message: TLS to the relay always. A template marked `carries_phi` is
sent in full only to recipient domains where TLS is guaranteed end to end (the operator's
list of domains that enforce TLS - MTA-STS/DANE or a partner under a BAA); anyone else gets
a notice with a secure link to read it on the portal, never the content.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import logging
import secrets
import string
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path

import dkim
import orjson

from connectors.email.base import MAX_BATCH, EmailEngine, EngineEvent, EventPage, Member
from connectors.email.base import MemberResult as Result
from connectors.email.dsn import read_spool
from connectors.email.errors import (
    EngineBatchTooLarge,
    EngineIdempotencyConflict,
    EngineProtocolError,
    EngineRequestError,
    EngineTlsError,
    EngineUnavailable,
)
from connectors.email.smtp_state import SentMessage, SmtpState
from connectors.email.smtp_transport import (
    RelaySettings,
    SmtpAuthFailed,
    SmtpRejected,
    SmtpRelay,
    SmtpTlsRequired,
    SmtpUnavailable,
)
from connectors.email.tracking import TokenSigner
from domain.send_dlp import PATTERNS

log = logging.getLogger(__name__)

STATE_FILE = "smtp-state.sqlite3"
# CRLF line ends (SMTP, DKIM) and headers folded at 998, so long unbreakable values such as
# the one-click URL stay verbatim instead of becoming RFC 2047 encoded-words.
SMTP_POLICY = policy.SMTP.clone(max_line_length=998)
DKIM_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
)


@dataclass(frozen=True)
class MessageTemplate:
    """What an audience is sent. `{field}` placeholders take the member's declared fields;
    `{link0}`, `{link1}`... become tracked links to `links[i]`."""

    subject: str
    text: str
    html: str | None = None
    links: tuple[str, ...] = ()
    carries_phi: bool = False


NOTICE = MessageTemplate(
    subject="You have a new secure message",
    text="Hello,\n\nYou have a new message from us. For your privacy it is not included in "
    "this email. Read it on our secure site:\n\n{secure_link}\n",
)


@dataclass(frozen=True)
class DkimSettings:
    domain: str
    selector: str
    private_key_pem: bytes = field(repr=False)


class SmtpEngine(EmailEngine):
    """EmailEngine that sends through an SMTP relay; state under `state_dir`."""

    thread_safe = False  # one SMTP session, sends in order

    def __init__(
        self,
        relay: RelaySettings,
        state_dir: str | Path,
        *,
        sender: str,
        tracking_base_url: str,
        token_secret: bytes,
        templates: Mapping[str, MessageTemplate],
        secure_portal_url: str,
        bounce_address: str | None = None,
        dkim_settings: DkimSettings | None = None,
        unsubscribe_mailto: str | None = None,
        tls_enforced_domains: Iterable[str] = (),
        token_ttl: dt.timedelta = dt.timedelta(days=60),
        clock: Callable[[], float] = time.time,
    ) -> None:
        for label, url in (("tracking", tracking_base_url), ("secure portal", secure_portal_url)):
            if not url.startswith("https://"):
                raise ValueError(f"the {label} URL must be https://")
        self.relay = SmtpRelay(relay)
        self.state = SmtpState(Path(state_dir) / STATE_FILE)
        self.sender = sender
        self.sender_address = parseaddr(sender)[1]
        self.sender_domain = self.sender_address.rpartition("@")[2]
        self.bounce_address = bounce_address or self.sender_address
        self.tracking_base_url = tracking_base_url.rstrip("/")
        self.secure_portal_url = secure_portal_url.rstrip("/")
        self.signer = TokenSigner(token_secret)
        self.templates = dict(templates)
        self.dkim = dkim_settings
        self.unsubscribe_mailto = unsubscribe_mailto
        self.tls_enforced_domains = {d.lower() for d in tls_enforced_domains}
        self.token_ttl = token_ttl
        self.clock = clock

    def close(self) -> None:
        self.relay.close()
        self.state.close()

    # --- EmailEngine ------------------------------------------------------------------------

    def ensure_audience(self, audience_id: str, name: str, purpose: str) -> None:
        if audience_id not in self.templates:
            raise EngineRequestError(f"ensure_audience: no message template for {audience_id}")
        self.state.put_audience(audience_id, name, purpose)

    def upsert(self, audience_id: str, members: list[Member], idempotency_key: str) -> list[Result]:
        if len(members) > MAX_BATCH:
            raise EngineBatchTooLarge(f"upsert: at most {MAX_BATCH} members per batch")
        fingerprint = _fingerprint(
            "upsert", audience_id, [(m.external_id, m.email, m.fields) for m in members]
        )
        replay = self._replay(idempotency_key, fingerprint)
        if replay is not None:
            return replay
        if not self.state.audience_exists(audience_id):
            raise EngineRequestError("upsert: unknown audience; call ensure_audience first")
        results = []
        for member in members:
            results.append(self._send_once(audience_id, member))
        self._remember(idempotency_key, fingerprint, results)
        return results

    def remove(
        self, audience_id: str, external_ids: list[str], idempotency_key: str
    ) -> list[Result]:
        if len(external_ids) > MAX_BATCH:
            raise EngineBatchTooLarge(f"remove: at most {MAX_BATCH} ids per batch")
        fingerprint = _fingerprint("remove", audience_id, list(external_ids))
        replay = self._replay(idempotency_key, fingerprint)
        if replay is not None:
            return replay
        now = _iso(self.clock())
        for external_id in external_ids:
            self.state.remove_member(audience_id, external_id, now)
        results = [Result(e, "ok", None) for e in external_ids]
        self._remember(idempotency_key, fingerprint, results)
        return results

    def events(self, cursor: str | None, limit: int = 100) -> EventPage:
        after = 0
        if cursor:
            if not cursor.startswith("smtp:") or not cursor[5:].isdigit():
                raise EngineRequestError("events: not a cursor of this adapter")
            after = int(cursor[5:])
        rows = self.state.events_after(after, limit)
        events = [
            EngineEvent(
                event_id=r.event_id,
                type=r.type,
                external_id=r.external_id,
                audience_id=r.audience_id,
                occurred_at=dt.datetime.fromisoformat(r.occurred_at).astimezone(dt.UTC),
                machine_open=r.machine_open,
                bounce_type=r.bounce_type,  # type: ignore[arg-type]
                url=r.url,
            )
            for r in rows
        ]
        return EventPage(events, f"smtp:{rows[-1].seq if rows else after}")

    # --- extras -----------------------------------------------------------------------------

    def list_member_ids(self, audience_id: str) -> list[str]:
        return self.state.member_ids(audience_id)

    def ingest_bounces(self, folder: str | Path, delete_processed: bool = True) -> int:
        """Read DSNs from a bounce spool into bounce events; returns how many were new.

        Processed files are deleted by default: a DSN quotes the recipient's address."""
        new = 0
        for path, bounce in read_spool(folder):
            message = None
            if bounce is not None:
                message = (bounce.message_ref and self.state.message(bounce.message_ref)) or (
                    bounce.message_id and self.state.message_by_id(bounce.message_id)
                )
            if bounce is not None and message:
                digest = hashlib.sha256(f"{message.message_id}|{bounce.status}".encode())
                new += self.state.add_event(
                    f"dsn_{digest.hexdigest()[:24]}",
                    "bounce",
                    message.external_id,
                    message.audience_id,
                    _iso(self.clock()),
                    bounce_type="hard" if bounce.hard else "soft",
                )
            else:
                log.info("bounce spool: %s is not a DSN of a message we sent", path.name)
            if delete_processed:
                path.unlink()
        return new

    def render(
        self, audience_id: str, member: Member, message_ref: str
    ) -> tuple[EmailMessage, list[str], bool]:
        """The MIME message for one member (and its link targets, and notice_only)."""
        template = self.templates[audience_id]
        domain = member.email.rpartition("@")[2].lower()
        notice_only = template.carries_phi and domain not in self.tls_enforced_domains
        expires = int(self.clock() + self.token_ttl.total_seconds())
        track = self.tracking_base_url

        def token(kind: str, link: int = 0) -> str:
            return self.signer.make(kind, message_ref, expires, link)

        unsubscribe_url = f"{track}/t/u/{token('u')}"
        if notice_only:
            secure = f"{self.secure_portal_url}/{token('s')}"
            subject, text, body_html, links = NOTICE.subject, NOTICE.text, None, []
            values: dict[str, str] = {"secure_link": secure}
        else:
            links = list(template.links)
            values = {k: v or "" for k, v in member.fields.items()}
            values.update({f"link{i}": f"{track}/t/c/{token('c', i)}" for i in range(len(links))})
            subject, text, body_html = template.subject, template.text, template.html
        message = EmailMessage(policy=SMTP_POLICY)
        message["From"] = self.sender
        message["To"] = member.email
        message["Subject"] = _fill(subject, values)
        message["Date"] = formatdate(self.clock(), usegmt=True)
        message["Message-ID"] = make_msgid(idstring=message_ref[:12], domain=self.sender_domain)
        unsubscribe = f"<{unsubscribe_url}>"
        if self.unsubscribe_mailto:
            unsubscribe += f", <mailto:{self.unsubscribe_mailto}?subject=unsubscribe-{message_ref}>"
        message["List-Unsubscribe"] = unsubscribe
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message["X-Hub-Ref"] = message_ref
        message.set_content(_fill(text, values) + f"\n\nUnsubscribe: {unsubscribe_url}\n")
        if body_html is not None:
            escaped = {k: html.escape(v, quote=True) for k, v in values.items()}
            pixel = f'<img src="{track}/t/o/{token("o")}" width="1" height="1" alt="">'
            message.add_alternative(_fill(body_html, escaped) + pixel, subtype="html")
        return message, links, notice_only

    # --- internals --------------------------------------------------------------------------

    def _send_once(self, audience_id: str, member: Member) -> Result:
        if self.state.member_message(audience_id, member.external_id):
            self.state.keep_member(audience_id, member.external_id)  # sent before: no resend
            return Result(member.external_id, "ok", None)
        if not PATTERNS["email"].fullmatch(member.email or ""):
            return Result(member.external_id, "rejected", "ENGINE_REJECTED")
        message_ref = secrets.token_hex(16)
        message, links, notice_only = self.render(audience_id, member, message_ref)
        raw = message.as_bytes()
        if self.dkim is not None:
            raw = self._dkim_sign(raw)
        try:
            self.relay.send(raw, self.bounce_address, member.email)
        except SmtpRejected:
            return Result(member.external_id, "rejected", "SMTP_REJECTED")
        except SmtpTlsRequired as exc:
            raise _engine_error(EngineTlsError, exc) from None
        except (SmtpUnavailable, SmtpAuthFailed) as exc:
            raise _engine_error(EngineUnavailable, exc) from None
        sent = SentMessage(
            message_ref,
            message["Message-ID"],
            audience_id,
            member.external_id,
            _iso(self.clock()),
            links,
            notice_only,
        )
        self.state.record_send(sent, f"smtp_sent_{message_ref}")
        return Result(member.external_id, "ok", None)

    def _dkim_sign(self, raw: bytes) -> bytes:
        assert self.dkim is not None
        signature = dkim.sign(
            raw,
            self.dkim.selector.encode(),
            self.dkim.domain.encode(),
            self.dkim.private_key_pem,
            include_headers=list(DKIM_HEADERS),
        )
        return signature + raw

    def _replay(self, key: str, fingerprint: str) -> list[Result] | None:
        stored = self.state.idempotent(key)
        if stored is None:
            return None
        if stored[0] != fingerprint:
            raise EngineIdempotencyConflict("the idempotency key was used for another batch")
        try:
            return [Result(*row) for row in orjson.loads(stored[1])]
        except (TypeError, ValueError):
            raise EngineProtocolError("stored idempotent answer is unreadable") from None

    def _remember(self, key: str, fingerprint: str, results: list[Result]) -> None:
        rows = [[r.external_id, r.status, r.error_code] for r in results]
        self.state.save_idempotent(key, fingerprint, orjson.dumps(rows).decode())


class _Values(dict):
    def __missing__(self, key: str) -> str:
        return ""  # an undeclared placeholder renders empty, never as a template error


def _fill(template: str, values: Mapping[str, str]) -> str:
    names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    return template.format_map(_Values({k: values.get(k, "") for k in names}))


def _fingerprint(operation: str, audience_id: str, payload: object) -> str:
    return hashlib.sha256(orjson.dumps([operation, audience_id, payload])).hexdigest()


def _engine_error(kind: type, exc: Exception):
    error = kind(str(exc))
    error.code = getattr(exc, "code", error.code)  # the SMTP_* reason code
    return error


def _iso(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="milliseconds")
