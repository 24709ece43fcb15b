"""A Microsoft 365 simulator shaped like Microsoft Graph v1.0, with its own OAuth token endpoint.

    POST /{tenant}/oauth2/v2.0/token     client_credentials | password (ROPC, demo only) |
                                         urn:ietf:params:oauth:grant-type:jwt-bearer (on-behalf-of)
    /v1.0/users, /me, /users/{id|upn}    directory (read)
    …/messages, …/mailFolders, …/sendMail, messages/{id}/reply|forward|move, DELETE
    …/events, …/calendar/events, events/{id} PATCH/DELETE, events/{id}/accept
    …/drive, /drives/{id}, items/{id}, children, content (GET, PUT), createLink, invite,
      root:/{name}:/content, items/{parent}:/{name}:/content; items carry `sensitivityLabel`
    /sites, /sites/{id}/lists, lists/{id}/items, /sites/{id}/drive
    POST /v1.0/$batch                    JSON batching (≤ 20 requests, each answered on its own)

State is in memory and seeded deterministically (`seed`), so tests and benchmarks see the
same organisation each run: the quickstart's alice@, bob@, sec@ plus carol@, dave@, erin@
of `contoso.example`, mail from inside and outside the tenant, meetings, and documents
labelled Public / General / Confidential / Highly Confidential (Purview-like). Tokens are
opaque (or HS256 JWTs with `token_format="jwt"`), checked on every call; delegated tokens
reach only their own user's mailbox, calendar and drive, app-only tokens reach every user.
It exists to be an upstream for tests and demos; it is not a security boundary.
"""

from __future__ import annotations

import base64
import json
import random
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_PASSWORD = "password"  # noqa: S105 — a grant type name
GRANT_OBO = "urn:ietf:params:oauth:grant-type:jwt-bearer"
MAX_BATCH = 20

#: Purview-like labels: display name → (label id, Tether sensitivity)
LABELS: dict[str, tuple[str, str]] = {
    "Public": ("a1b2c3d4-0000-4000-8000-000000000001", "public"),
    "General": ("a1b2c3d4-0000-4000-8000-000000000002", "internal"),
    "Confidential": ("a1b2c3d4-0000-4000-8000-000000000003", "confidential"),
    "Highly Confidential": ("a1b2c3d4-0000-4000-8000-000000000004", "highly_confidential"),
}

PEOPLE = [
    ("alice", "Alice Andersen", "Chief of Staff", "Executive Office"),
    ("bob", "Bob Baker", "Account Manager", "Sales"),
    ("sec", "Sam Security", "Security Lead", "Security"),
    ("carol", "Carol Chen", "Finance Controller", "Finance"),
    ("dave", "Dave Diaz", "Staff Engineer", "Engineering"),
    ("erin", "Erin Evans", "HR Partner", "People"),
]
EXTERNAL = [("Pat Partner", "pat@fabrikam.example"), ("Quinn Vendor", "quinn@northwind.example")]
DOCUMENTS = [
    ("Press release draft.docx", "Public", "Contoso announces its new assistant programme."),
    ("Team handbook.docx", "General", "How the team works: rituals, tools, on-call."),
    ("Q3 forecast.xlsx", "Confidential", "Revenue forecast Q3: 12.4M, margin 31%."),
    ("Board minutes.docx", "Highly Confidential", "Board minutes: acquisition of Fabrikam under NDA."),
    ("Customer list.csv", "Confidential", "name,email\nPat Partner,pat@fabrikam.example\n"),
    ("Lunch menu.txt", "Public", "Monday: soup. Tuesday: pasta."),
]
SUBJECTS = [
    "Quarterly review",
    "Re: contract renewal",
    "Invoice 4471",
    "Offsite logistics",
    "Security awareness",
    "Hiring plan",
    "Customer escalation",
    "Travel approval",
    "Roadmap draft",
    "Weekly sync notes",
]


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class SimToken:
    client_id: str
    user_id: str | None  # None: app-only
    scopes: tuple[str, ...]
    audience: str
    expires_at: float


@dataclass
class Answer:
    status: int
    body: Any = None  # dict (JSON), bytes, or None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def _gid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "tether-sim:" + "/".join(parts)))


def _addr(name: str, address: str) -> dict[str, Any]:
    return {"emailAddress": {"name": name, "address": address}}


class M365Sim:
    """The simulated tenant: directory, mailboxes, calendars, drives, sites, OAuth clients and tokens."""

    def __init__(
        self,
        *,
        tenant_domain: str = "contoso.example",
        seed: int = 7,
        clients: Mapping[str, str] | None = None,
        token_ttl: int = 3600,
        page_size: int = 10,
        token_format: str = "opaque",  # noqa: S107 — a format name
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.domain = tenant_domain
        self.tenant_id = _gid("tenant", tenant_domain)
        self.clients: dict[str, str] = dict(clients or {"tether-gateway": "sim-gateway-secret"})
        self.token_ttl = token_ttl
        self.page_size = page_size
        self.token_format = token_format
        self.clock = clock
        self.tokens: dict[str, SimToken] = {}
        self.passwords: dict[str, str] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.by_upn: dict[str, str] = {}
        self.folders: dict[str, dict[str, dict[str, Any]]] = {}
        self.messages: dict[str, dict[str, dict[str, Any]]] = {}
        self.events: dict[str, dict[str, dict[str, Any]]] = {}
        self.drives: dict[str, dict[str, Any]] = {}
        self.items: dict[str, dict[str, dict[str, Any]]] = {}
        self.content: dict[str, bytes] = {}
        self.sites: dict[str, dict[str, Any]] = {}
        self.lists: dict[str, dict[str, dict[str, Any]]] = {}
        self.list_items: dict[str, list[dict[str, Any]]] = {}
        self.outbox: list[dict[str, Any]] = []  # every message that left a mailbox (sent, replied, forwarded)
        self.shares: list[dict[str, Any]] = []  # every createLink / invite
        self.requests = 0
        self._jwt_key = secrets.token_bytes(32)
        self._seed(random.Random(seed))  # noqa: S311 — deterministic demo data, not security

    # ------------------------------------------------------------------ seed

    def _seed(self, rnd: random.Random) -> None:
        base = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
        for alias, name, title, dept in PEOPLE:
            upn = f"{alias}@{self.domain}"
            uid = _gid("user", upn)
            self.users[uid] = {
                "id": uid,
                "displayName": name,
                "userPrincipalName": upn,
                "mail": upn,
                "jobTitle": title,
                "department": dept,
                "givenName": name.split()[0],
                "surname": name.split()[-1],
            }
            self.by_upn[upn] = uid
            self.passwords[upn] = f"{alias}-password"
            self.folders[uid] = {
                fid: {
                    "id": _gid("folder", uid, fid),
                    "displayName": disp,
                    "parentFolderId": None,
                    "childFolderCount": 0,
                    "wellKnownName": fid,
                }
                for fid, disp in (
                    ("inbox", "Inbox"),
                    ("sentitems", "Sent Items"),
                    ("drafts", "Drafts"),
                    ("deleteditems", "Deleted Items"),
                    ("archive", "Archive"),
                )
            }
            self.messages[uid] = {}
            self.events[uid] = {}
            self._new_drive(_gid("drive", uid), owner=uid, name="OneDrive")
        people = list(self.users.values())
        for user in people:
            uid = user["id"]
            for i in range(25):
                if rnd.random() < 0.3:
                    sender = EXTERNAL[rnd.randrange(len(EXTERNAL))]
                else:
                    other = people[rnd.randrange(len(people))]
                    sender = (other["displayName"], other["mail"])
                self._store_message(
                    uid,
                    "inbox",
                    subject=f"{SUBJECTS[i % len(SUBJECTS)]} #{i + 1}",
                    body=f"Hello {user['givenName']}, message {i + 1} of the seed. Ref {rnd.randrange(10**6):06d}.",
                    sender=sender,
                    to=[(user["displayName"], user["mail"])],
                    when=base - timedelta(hours=i * 7),
                    key=f"seed{i}",
                )
            for j in range(6):
                start = base + timedelta(days=j, hours=1 + rnd.randrange(8))
                attendees = rnd.sample(people, 2)
                eid = _gid("event", uid, str(j))
                self.events[uid][eid] = {
                    "id": eid,
                    "subject": f"{['1:1', 'Planning', 'Review', 'Standup', 'Interview', 'Demo'][j]} meeting",
                    "bodyPreview": "Agenda to follow.",
                    "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
                    "end": {"dateTime": (start + timedelta(minutes=30)).isoformat(), "timeZone": "UTC"},
                    "location": {"displayName": f"Room {100 + j}"},
                    "organizer": _addr(user["displayName"], user["mail"]),
                    "attendees": [
                        {**_addr(a["displayName"], a["mail"]), "type": "required", "status": {"response": "none"}}
                        for a in attendees
                    ],
                    "responseStatus": {"response": "organizer" if j % 2 == 0 else "notResponded"},
                    "isOnlineMeeting": False,
                    "isCancelled": False,
                }
            drive_id = _gid("drive", uid)
            root = self.drives[drive_id]["root"]
            for k, (fname, label, text) in enumerate(DOCUMENTS):
                self._new_file(drive_id, root, fname, f"{text}\n(owner {user['mail']}, copy {k})".encode(), label)
        for site_name, label in (("Finance", "Confidential"), ("Engineering", "General")):
            sid = f"{self.domain},{_gid('site', site_name)},{_gid('web', site_name)}"
            drive_id = _gid("drive", "site", site_name)
            self._new_drive(drive_id, owner=None, name="Documents", site=sid)
            self.sites[sid] = {
                "id": sid,
                "name": site_name,
                "displayName": site_name,
                "webUrl": f"https://{self.domain.split('.')[0]}.sharepoint.example/sites/{site_name}",
            }
            root = self.drives[drive_id]["root"]
            self._new_file(drive_id, root, f"{site_name} plan.docx", f"{site_name} plan for 2027.".encode(), label)
            lid = _gid("list", site_name)
            self.lists[sid] = {
                lid: {"id": lid, "name": "Projects", "displayName": "Projects", "list": {"template": "genericList"}}
            }
            self.list_items[lid] = [
                {
                    "id": str(n + 1),
                    "fields": {"Title": f"{site_name} project {n + 1}", "Status": ["Active", "Done"][n % 2]},
                }
                for n in range(12)
            ]

    def _new_drive(self, drive_id: str, *, owner: str | None, name: str, site: str | None = None) -> None:
        root_id = _gid("item", drive_id, "root")
        self.items[drive_id] = {
            root_id: {
                "id": root_id,
                "name": "root",
                "root": {},
                "folder": {"childCount": 0},
                "size": 0,
                "parentReference": {"driveId": drive_id},
                "children": [],
            }
        }
        self.drives[drive_id] = {
            "id": drive_id,
            "name": name,
            "driveType": "documentLibrary" if site else "business",
            "owner": {"user": {"id": owner}} if owner else {"group": {"displayName": name}},
            "root": root_id,
            "site": site,
        }

    def _new_file(self, drive_id: str, parent_id: str, name: str, data: bytes, label: str) -> dict[str, Any]:
        iid = _gid("item", drive_id, name)
        label_id, _ = LABELS[label]
        item = {
            "id": iid,
            "name": name,
            "size": len(data),
            "file": {"mimeType": _mime(name)},
            "parentReference": {"driveId": drive_id, "id": parent_id},
            "lastModifiedDateTime": "2026-11-01T09:00:00Z",
            "webUrl": f"https://{self.domain.split('.')[0]}.sharepoint.example/d/{iid}",
            "sensitivityLabel": {"labelId": label_id, "displayName": label, "assignmentMethod": "standard"},
        }
        self.items[drive_id][iid] = item
        self.content[iid] = data
        parent = self.items[drive_id][parent_id]
        if iid not in parent["children"]:
            parent["children"].append(iid)
            parent["folder"]["childCount"] = len(parent["children"])
        return item

    def _store_message(
        self,
        uid: str,
        folder: str,
        *,
        subject: str,
        body: str,
        sender: tuple[str, str],
        to: list[tuple[str, str]],
        when: datetime,
        key: str,
        cc: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        mid = _gid("message", uid, folder, key)
        msg = {
            "id": mid,
            "subject": subject,
            "bodyPreview": body[:255],
            "body": {"contentType": "text", "content": body},
            "from": _addr(*sender),
            "sender": _addr(*sender),
            "toRecipients": [_addr(n, a) for n, a in to],
            "ccRecipients": [_addr(n, a) for n, a in cc or []],
            "receivedDateTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "isRead": False,
            "hasAttachments": False,
            "parentFolderId": self.folders[uid][folder]["id"],
            "importance": "normal",
        }
        self.messages[uid][mid] = msg
        return msg

    # ------------------------------------------------------------------ OAuth

    def issue_token(self, client_id: str, user_id: str | None, scopes: tuple[str, ...], audience: str) -> str:
        exp = self.clock() + self.token_ttl
        if self.token_format == "jwt":  # noqa: S105 — a format name
            import jwt

            claims = {
                "aud": audience,
                "appid": client_id,
                "tid": self.tenant_id,
                "exp": int(exp),
                "iat": int(self.clock()),
                "scp": " ".join(scopes),
                "jti": secrets.token_hex(8),
            }
            if user_id:
                claims["oid"] = user_id
            token = jwt.encode(claims, self._jwt_key, algorithm="HS256")
        else:
            token = "simat." + secrets.token_urlsafe(32)
        self.tokens[token] = SimToken(client_id, user_id, scopes, audience, exp)
        return token

    def user_token(
        self, upn: str, *, audience: str = "tether-gateway", scopes: tuple[str, ...] = ("User.Read",)
    ) -> str:
        """A delegated token for a user, as the IdP would hand the person's app (tests and demos)."""
        return self.issue_token(audience, self.by_upn[upn.lower()], scopes, audience)

    def token_endpoint(self, form: Mapping[str, str]) -> Answer:
        def err(code: str, desc: str, status: int = 400) -> Answer:
            return Answer(status, {"error": code, "error_description": desc})

        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        known = self.clients.get(client_id)
        if known is None or not secrets.compare_digest(known, secret):
            return err("invalid_client", "AADSTS7000215: Invalid client secret provided.", 401)
        scopes = tuple(form.get("scope", "https://graph.microsoft.com/.default").split())
        grant = form.get("grant_type")
        if grant == GRANT_CLIENT_CREDENTIALS:
            user = None
        elif grant == GRANT_PASSWORD:
            upn = form.get("username", "").lower()
            pw = self.passwords.get(upn)
            if pw is None or not secrets.compare_digest(pw, form.get("password", "")):
                return err("invalid_grant", "AADSTS50126: Invalid username or password.")
            user = self.by_upn[upn]
        elif grant == GRANT_OBO:
            if form.get("requested_token_use") != "on_behalf_of":
                return err("invalid_request", "requested_token_use must be on_behalf_of")
            assertion = self._valid(form.get("assertion", ""))
            if assertion is None or assertion.user_id is None:
                return err("invalid_grant", "AADSTS50013: Assertion failed signature validation or expired.")
            if assertion.audience != client_id:
                return err("invalid_grant", "AADSTS50013: Assertion audience does not match the client app.")
            user = assertion.user_id
        else:
            return err("unsupported_grant_type", f"grant_type {grant!r} is not supported")
        token = self.issue_token(client_id, user, scopes, "https://graph.microsoft.com")
        return Answer(
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.token_ttl,
                "ext_expires_in": self.token_ttl,
                "access_token": token,
                "scope": " ".join(scopes),
            },
        )

    def _valid(self, token: str) -> SimToken | None:
        t = self.tokens.get(token)
        if t is None or t.expires_at <= self.clock():
            return None
        return t

    def revoke_all(self) -> None:
        self.tokens.clear()

    # ------------------------------------------------------------------ Graph dispatch

    def handle(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes, base: str
    ) -> Answer:
        """Answer one Graph request. `path` is below /v1.0 and already percent-decoded."""
        self.requests += 1
        auth = headers.get("authorization", "")
        tok = self._valid(auth[7:]) if auth[:7].lower() == "bearer " else None
        if tok is None or tok.audience != "https://graph.microsoft.com":
            return _gerr(401, "InvalidAuthenticationToken", "Access token is empty, expired or invalid.")
        try:
            return self._route(tok, method, path, query, body, base, headers)
        except GraphError as e:
            return _gerr(e.status, e.code, e.message)

    def _route(
        self,
        tok: SimToken,
        method: str,
        path: str,
        q: Mapping[str, str],
        body: bytes,
        base: str,
        headers: Mapping[str, str],
    ) -> Answer:
        p = path.rstrip("/") or "/"
        if p == "/$batch" and method == "POST":
            return self._batch(tok, _json(body), base, headers)
        if p == "/me" or p.startswith("/me/"):
            if tok.user_id is None:
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            p = f"/users/{tok.user_id}" + p[3:]
        m = re.fullmatch(r"/users/([^/]+)(/.*)?", p)
        if m:
            uid = self._user_id(m.group(1))
            rest = m.group(2) or ""
            if rest == "" and method == "GET":
                return Answer(200, self.users[uid])
            self._own(tok, uid)
            if rest == "/drive" or rest.startswith("/drive/"):
                return self._drive(tok, method, _gid("drive", uid), rest[6:], q, body, base, p)
            return self._mailbox(uid, method, rest, q, body, base, p)
        if p == "/users" and method == "GET":
            return self._page(list(self.users.values()), q, base, p)
        m = re.fullmatch(r"/drives/([^/]+)(/.*)?", p)
        if m:
            return self._drive(tok, method, m.group(1), m.group(2) or "", q, body, base, p)
        if p == "/sites" and method == "GET":
            return self._page(list(self.sites.values()), q, base, p)
        m = re.fullmatch(r"/sites/([^/]+)(/.*)?", p)
        if m:
            return self._site(tok, method, m.group(1), m.group(2) or "", q, body, base, p)
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{p.split('/')[1]}'.")

    def _user_id(self, ref: str) -> str:
        if ref in self.users:
            return ref
        uid = self.by_upn.get(ref.lower())
        if uid is None:
            raise GraphError(404, "Request_ResourceNotFound", f"Resource '{ref}' does not exist.")
        return uid

    @staticmethod
    def _own(tok: SimToken, uid: str) -> None:
        if tok.user_id is not None and tok.user_id != uid:
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")

    def _page(self, rows: list[dict[str, Any]], q: Mapping[str, str], base: str, path: str) -> Answer:
        top = min(max(int(q.get("$top", self.page_size) or self.page_size), 1), 999)
        skip = max(int(q.get("$skip", 0) or 0), 0)
        page = [_public(r) for r in rows[skip : skip + top]]
        if "$select" in q:
            keep = {s.strip() for s in q["$select"].split(",")} | {"id"}
            page = [{k: v for k, v in r.items() if k in keep} for r in page]
        doc: dict[str, Any] = {"@odata.context": f"{base}/v1.0/$metadata#{path.strip('/')}", "value": page}
        if skip + top < len(rows):
            nq = {k: v for k, v in q.items() if k not in ("$skip", "$top")}
            nq.update({"$top": str(top), "$skip": str(skip + top)})
            doc["@odata.nextLink"] = f"{base}/v1.0{path}?{urlencode(nq)}"
        return Answer(200, doc)

    # ------------------------------------------------------------------ mail and calendar

    def _mailbox(
        self, uid: str, method: str, rest: str, q: Mapping[str, str], body: bytes, base: str, path: str
    ) -> Answer:
        msgs = self.messages[uid]
        user = self.users[uid]
        if rest == "/messages" and method == "GET":
            return self._page(_newest(msgs.values()), q, base, path)
        if rest == "/messages" and method == "POST":  # create a draft
            doc = _json(body)
            draft = self._store_message(
                uid,
                "drafts",
                subject=str(doc.get("subject", "")),
                body=str(doc.get("body", {}).get("content", "")),
                sender=(user["displayName"], user["mail"]),
                to=_recips(doc.get("toRecipients")),
                when=datetime.now(UTC),
                key=secrets.token_hex(8),
            )
            return Answer(201, draft)
        if rest == "/sendMail" and method == "POST":
            doc = _json(body)
            message = doc.get("message")
            if not isinstance(message, dict):
                raise GraphError(400, "ErrorInvalidRequest", "The message is missing.")
            self._send(uid, message, save=doc.get("saveToSentItems", True) is not False)
            return Answer(202)
        if rest == "/mailFolders" and method == "GET":
            return self._page(list(self.folders[uid].values()), q, base, path)
        m = re.fullmatch(r"/mailFolders/([^/]+)(/messages)?", rest)
        if m and method == "GET":
            folder = self._folder(uid, m.group(1))
            if m.group(2):
                rows = [x for x in _newest(msgs.values()) if x["parentFolderId"] == folder["id"]]
                return self._page(rows, q, base, path)
            return Answer(200, folder)
        m = re.fullmatch(r"/(?:mailFolders/[^/]+/)?messages/([^/]+)(/[A-Za-z]+)?", rest)
        if m:
            msg = msgs.get(m.group(1))
            if msg is None:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            verb = m.group(2)
            if verb is None and method == "GET":
                return Answer(200, _public(msg))
            if verb is None and method == "PATCH":
                doc = _json(body)
                for k in ("isRead", "subject", "importance", "categories"):
                    if k in doc:
                        msg[k] = doc[k]
                return Answer(200, msg)
            if verb is None and method == "DELETE":
                del msgs[msg["id"]]
                return Answer(204)
            if verb == "/move" and method == "POST":
                folder = self._folder(uid, str(_json(body).get("destinationId", "")))
                msg["parentFolderId"] = folder["id"]
                return Answer(201, msg)
            if verb in ("/reply", "/replyAll", "/forward") and method == "POST":
                doc = _json(body)
                sender = msg["from"]["emailAddress"]
                if verb == "/forward":
                    to = [_addr(n, a) for n, a in _recips(doc.get("toRecipients"))]
                    subject = "FW: " + msg["subject"]
                else:
                    to = [_addr(sender["name"], sender["address"])]
                    if verb == "/replyAll":
                        to += msg["toRecipients"] + msg["ccRecipients"]
                    subject = "RE: " + msg["subject"]
                self._send(
                    uid,
                    {"subject": subject, "toRecipients": to, "body": {"content": str(doc.get("comment", ""))}},
                    save=True,
                )
                return Answer(202)
        if rest in ("/events", "/calendar/events", "/calendarView") and method == "GET":
            rows = sorted(self.events[uid].values(), key=lambda e: e["start"]["dateTime"])
            return self._page(rows, q, base, path)
        if rest in ("/events", "/calendar/events") and method == "POST":
            doc = _json(body)
            if "subject" not in doc or "start" not in doc or "end" not in doc:
                raise GraphError(400, "ErrorInvalidRequest", "subject, start and end are required.")
            eid = _gid("event", uid, secrets.token_hex(8))
            ev = {
                "id": eid,
                "subject": doc["subject"],
                "start": doc["start"],
                "end": doc["end"],
                "location": doc.get("location", {"displayName": ""}),
                "attendees": doc.get("attendees", []),
                "organizer": _addr(user["displayName"], user["mail"]),
                "bodyPreview": "",
                "responseStatus": {"response": "organizer"},
                "isCancelled": False,
            }
            self.events[uid][eid] = ev
            return Answer(201, ev)
        if rest == "/calendar" and method == "GET":
            return Answer(
                200,
                {"id": _gid("calendar", uid), "name": "Calendar", "owner": _addr(user["displayName"], user["mail"])},
            )
        m = re.fullmatch(r"/(?:calendar/)?events/([^/]+)(/[A-Za-z]+)?", rest)
        if m:
            found = self.events[uid].get(m.group(1))
            if found is None:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
            ev = found
            verb = m.group(2)
            if verb is None and method == "GET":
                return Answer(200, ev)
            if verb is None and method == "PATCH":
                doc = _json(body)
                for k in ("subject", "start", "end", "location", "attendees", "body"):
                    if k in doc:
                        ev[k] = doc[k]
                return Answer(200, ev)
            if verb is None and method == "DELETE":
                del self.events[uid][ev["id"]]
                return Answer(204)
            if verb in ("/accept", "/decline", "/tentativelyAccept") and method == "POST":
                ev["responseStatus"] = {
                    "response": {"/accept": "accepted", "/decline": "declined"}.get(verb, "tentativelyAccepted")
                }
                return Answer(202)
        raise GraphError(400, "BadRequest", f"Unsupported request {method} {path}")

    def _folder(self, uid: str, ref: str) -> dict[str, Any]:
        folders = self.folders[uid]
        if ref.lower() in folders:
            return folders[ref.lower()]
        for f in folders.values():
            if f["id"] == ref:
                return f
        raise GraphError(404, "ErrorItemNotFound", "The specified folder was not found in the store.")

    def _send(self, uid: str, message: Mapping[str, Any], *, save: bool) -> None:
        user = self.users[uid]
        to = _recips(message.get("toRecipients"))
        cc = _recips(message.get("ccRecipients"))
        bcc = _recips(message.get("bccRecipients"))
        if not (to or cc or bcc):
            raise GraphError(400, "ErrorInvalidRecipients", "At least one recipient is not valid.")
        subject = str(message.get("subject", ""))
        text = str((message.get("body") or {}).get("content", ""))
        key = secrets.token_hex(8)
        if save:
            self._store_message(
                uid,
                "sentitems",
                subject=subject,
                body=text,
                sender=(user["displayName"], user["mail"]),
                to=to,
                cc=cc,
                when=datetime.now(UTC),
                key=key,
            )
        for _, address in to + cc + bcc:
            rid = self.by_upn.get(address.lower())
            if rid is not None:
                self._store_message(
                    rid,
                    "inbox",
                    subject=subject,
                    body=text,
                    sender=(user["displayName"], user["mail"]),
                    to=to,
                    cc=cc,
                    when=datetime.now(UTC),
                    key=key,
                )
        self.outbox.append(
            {
                "from": user["mail"],
                "to": [a for _, a in to + cc + bcc],
                "subject": subject,
                "attachments": len(message.get("attachments") or []),
            }
        )

    # ------------------------------------------------------------------ drives and sites

    def _drive_ok(self, tok: SimToken, drive_id: str) -> dict[str, Any]:
        drive = self.drives.get(drive_id)
        if drive is None:
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        owner = drive["owner"].get("user", {}).get("id")
        if owner is not None:
            self._own(tok, owner)
        return drive

    def _drive(
        self,
        tok: SimToken,
        method: str,
        drive_id: str,
        rest: str,
        q: Mapping[str, str],
        body: bytes,
        base: str,
        path: str,
    ) -> Answer:
        drive = self._drive_ok(tok, drive_id)
        items = self.items[drive_id]
        root = drive["root"]
        if rest == "" and method == "GET":
            return Answer(200, {k: v for k, v in drive.items() if k not in ("root", "site")})
        # path addressing: root:/name: and items/{id}:/name:
        m = re.fullmatch(r"/(?:root|items/([^/:]+)):/([^:]+?):?(/content)?", rest)
        if m:
            parent = m.group(1) or root
            name = m.group(2).strip("/")
            existing = next(
                (items[c] for c in items.get(parent, {}).get("children", []) if items[c]["name"] == name), None
            )
            if m.group(3) and method == "PUT":
                label = (existing or {}).get("sensitivityLabel", {}).get("displayName", "General")
                item = self._new_file(drive_id, parent, name, body, label)
                return Answer(200 if existing else 201, self._item_doc(item, base))
            if existing is None:
                raise GraphError(404, "itemNotFound", "The resource could not be found.")
            if m.group(3) and method == "GET":
                return self._download(existing)
            if method == "GET":
                return Answer(200, self._item_doc(existing, base))
        if rest.startswith("/root"):
            rest = f"/items/{root}" + rest[5:]
        m = re.fullmatch(r"/items/([^/]+)(/[A-Za-z]+)?", rest)
        if not m:
            raise GraphError(400, "BadRequest", f"Unsupported request {method} {path}")
        hit = items.get(m.group(1))
        if hit is None:
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        item = hit
        verb = m.group(2)
        if verb is None and method == "GET":
            doc = self._item_doc(item, base)
            if "$select" in q:
                keep = {s.strip() for s in q["$select"].split(",")} | {"id"}
                doc = {k: v for k, v in doc.items() if k in keep}
            return Answer(200, doc)
        if verb is None and method == "DELETE":
            if item["id"] == root:
                raise GraphError(403, "accessDenied", "The root cannot be deleted.")
            del items[item["id"]]
            self.content.pop(item["id"], None)
            parent = items.get(item["parentReference"].get("id", ""))
            if parent and item["id"] in parent["children"]:
                parent["children"].remove(item["id"])
                parent["folder"]["childCount"] = len(parent["children"])
            return Answer(204)
        if verb == "/children" and method == "GET":
            rows = [self._item_doc(items[c], base) for c in item.get("children", [])]
            return self._page(rows, q, base, path)
        if verb == "/content" and method == "GET":
            return self._download(item)
        if verb == "/content" and method == "PUT":
            self.content[item["id"]] = body
            item["size"] = len(body)
            return Answer(200, self._item_doc(item, base))
        if verb == "/sensitivityLabel" and method == "GET":
            return Answer(200, item.get("sensitivityLabel") or {})
        if verb == "/createLink" and method == "POST":
            doc = _json(body)
            kind, scope = doc.get("type", "view"), doc.get("scope", "organization")
            perm = {
                "id": secrets.token_hex(8),
                "roles": ["write" if kind == "edit" else "read"],
                "link": {"type": kind, "scope": scope, "webUrl": f"https://share.example/{secrets.token_urlsafe(9)}"},
            }
            self.shares.append({"item": item["id"], "kind": "link", "scope": scope})
            return Answer(201, perm)
        if verb == "/invite" and method == "POST":
            doc = _json(body)
            recips = [r.get("email", "") for r in doc.get("recipients", []) if isinstance(r, dict)]
            if not recips:
                raise GraphError(400, "invalidRequest", "recipients are required.")
            roles = doc.get("roles", ["read"])
            self.shares.append({"item": item["id"], "kind": "invite", "to": recips, "roles": roles})
            return Answer(
                200,
                {
                    "value": [
                        {"id": secrets.token_hex(8), "roles": roles, "grantedTo": {"user": {"email": r}}}
                        for r in recips
                    ]
                },
            )
        raise GraphError(400, "BadRequest", f"Unsupported request {method} {path}")

    def _item_doc(self, item: Mapping[str, Any], base: str) -> dict[str, Any]:
        doc = {k: v for k, v in item.items() if k != "children"}
        if "file" in item:
            # Graph hands out a short-lived pre-authenticated URL; the HTTP gateway strips it.
            doc["@microsoft.graph.downloadUrl"] = f"{base}/download/{item['id']}?token={secrets.token_urlsafe(12)}"
        return doc

    def _download(self, item: Mapping[str, Any]) -> Answer:
        if "file" not in item:
            raise GraphError(400, "notSupported", "A folder has no content.")
        return Answer(200, self.content.get(item["id"], b""), content_type=item["file"]["mimeType"])

    def _site(
        self, tok: SimToken, method: str, sid: str, rest: str, q: Mapping[str, str], body: bytes, base: str, path: str
    ) -> Answer:
        site = self.sites.get(sid)
        if site is None:
            raise GraphError(404, "itemNotFound", "Site not found.")
        if rest == "" and method == "GET":
            return Answer(200, site)
        if rest == "/drive" or rest.startswith("/drive/"):
            drive_id = next(d for d, v in self.drives.items() if v["site"] == sid)
            return self._drive(tok, method, drive_id, rest[6:], q, body, base, path)
        lists = self.lists[sid]
        if rest == "/lists" and method == "GET":
            return self._page(list(lists.values()), q, base, path)
        m = re.fullmatch(r"/lists/([^/]+)(/items(?:/([^/]+))?)?", rest)
        if m:
            lst = lists.get(m.group(1)) or next((v for v in lists.values() if v["name"] == m.group(1)), None)
            if lst is None:
                raise GraphError(404, "itemNotFound", "List not found.")
            rows = self.list_items[lst["id"]]
            if m.group(2) is None and method == "GET":
                return Answer(200, lst)
            if m.group(3) is None and method == "GET":
                return self._page(rows, q, base, path)
            if m.group(3) is None and method == "POST":
                row = {"id": str(len(rows) + 1), "fields": dict(_json(body).get("fields", {}))}
                rows.append(row)
                return Answer(201, row)
            found_row = next((r for r in rows if r["id"] == m.group(3)), None)
            if found_row is not None and method == "GET":
                return Answer(200, found_row)
        raise GraphError(400, "BadRequest", f"Unsupported request {method} {path}")

    # ------------------------------------------------------------------ $batch

    def _batch(self, tok: SimToken, doc: Mapping[str, Any], base: str, headers: Mapping[str, str]) -> Answer:
        reqs = doc.get("requests")
        if not isinstance(reqs, list) or not 1 <= len(reqs) <= MAX_BATCH:
            raise GraphError(400, "BadRequest", f"A batch holds 1 to {MAX_BATCH} requests.")
        out = []
        for r in reqs:
            url = "/" + str(r.get("url", "")).lstrip("/")
            path, _, qs = url.partition("?")
            inner_body = json.dumps(r["body"]).encode() if "body" in r else b""
            ans = self.handle(
                str(r.get("method", "GET")).upper(), unquote(path), dict(parse_qsl(qs)), headers, inner_body, base
            )
            if isinstance(ans.body, bytes):
                payload: Any = base64.b64encode(ans.body).decode()
            else:
                payload = ans.body
            out.append(
                {
                    "id": r.get("id"),
                    "status": ans.status,
                    "headers": {"Content-Type": ans.content_type},
                    "body": payload,
                }
            )
        return Answer(200, {"responses": out})


# ---------------------------------------------------------------------- helpers


def _gerr(status: int, code: str, message: str) -> Answer:
    return Answer(
        status, {"error": {"code": code, "message": message, "innerError": {"request-id": str(uuid.uuid4())}}}
    )


def _json(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        doc = json.loads(body)
    except ValueError:
        raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None
    if not isinstance(doc, dict):
        raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
    return doc


def _recips(v: Any) -> list[tuple[str, str]]:
    out = []
    for r in v or []:
        ea = r.get("emailAddress", {}) if isinstance(r, dict) else {}
        if isinstance(ea, dict) and ea.get("address"):
            out.append((str(ea.get("name", "")), str(ea["address"])))
    return out


def _newest(rows: Any) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda m: m["receivedDateTime"], reverse=True)


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "children"}


def _mime(name: str) -> str:
    ext = name.rsplit(".", 1)[-1]
    return {
        "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "csv": "text/csv",
        "txt": "text/plain",
    }.get(ext, "application/octet-stream")


def sensitivity_of_label(display_name: str | None) -> str | None:
    """The Tether sensitivity of a Purview-like label name (None when unknown)."""
    if not display_name:
        return None
    hit = LABELS.get(display_name)
    return hit[1] if hit else None


# ---------------------------------------------------------------------- ASGI


def create_app(sim: M365Sim | None = None) -> Starlette:
    """The simulator as a Starlette app: `app.state.sim` is the live tenant (tests inspect it)."""
    tenant = sim or M365Sim()

    def render(ans: Answer) -> Response:
        if ans.body is None:
            return Response(status_code=ans.status, headers=ans.headers)
        if isinstance(ans.body, bytes):
            return Response(ans.body, status_code=ans.status, media_type=ans.content_type, headers=ans.headers)
        return JSONResponse(ans.body, status_code=ans.status, headers=ans.headers)

    async def token(request: Request) -> Response:
        form = await request.form()
        return render(tenant.token_endpoint({k: str(v) for k, v in form.items()}))

    async def graph(request: Request) -> Response:
        body = await request.body()
        base = f"{request.url.scheme}://{request.url.netloc}"
        path = "/" + request.path_params["path"]
        return render(tenant.handle(request.method, path, dict(request.query_params), request.headers, body, base))

    async def download(request: Request) -> Response:
        data = tenant.content.get(request.path_params["item"])
        return Response(data or b"", status_code=200 if data is not None else 404)

    routes = [
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        Route("/v1.0/{path:path}", graph, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/download/{item}", download, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.sim = tenant
    return app


__all__ = ["LABELS", "M365Sim", "create_app", "sensitivity_of_label"]
