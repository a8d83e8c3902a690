"""Insert resolution: which records of a group commit are inserted, and why not.

Pure: given the live stored rows that share a token, deterministic key or request id
with the batch, it decides per call (see Store.insert_tokens for the rules); the store
then writes ``to_insert`` and ``reservations``.
"""

from __future__ import annotations

from collections.abc import Sequence

from vault.storage.base import InsertOutcome, InsertStatus, TokenRecord

__all__ = ["InsertResolver"]

_DetKey = tuple[str, int, int, bytes]
_ReqKey = tuple[str, str | None]
_Reservation = tuple[str, str, bytes | None, str]


class InsertResolver:
    """Decides, call by call, what of a group commit is inserted. Store-independent
    and pure: the same rules hold for every store (see Store.insert_tokens)."""

    def __init__(self, live: Sequence[TokenRecord]) -> None:
        self.taken = {rec.token for rec in live}
        self.by_det: dict[_DetKey, TokenRecord] = {
            (r.tenant, r.kind, r.token_format, r.fingerprint): r for r in live if r.deterministic
        }
        # (tenant, request id) -> (hash of the request that used it, its token's row)
        self.by_request: dict[_ReqKey, tuple[bytes | None, TokenRecord]] = {
            (r.tenant, r.request_id): (r.request_hash, r) for r in live if r.request_id
        }
        self.to_insert: list[TokenRecord] = []
        self.reservations: list[_Reservation] = []

    def resolve(self, records: Sequence[TokenRecord]) -> list[InsertOutcome]:
        outcomes: list[InsertOutcome] = []
        pending: list[TokenRecord] = []
        taken: set[str] = set()
        det: dict[_DetKey, TokenRecord] = {}
        req: dict[_ReqKey, tuple[bytes | None, TokenRecord]] = {}
        reservations: list[_Reservation] = []
        aborted = False
        for rec in records:
            rkey = (rec.tenant, rec.request_id)
            dkey = (rec.tenant, rec.kind, rec.token_format, rec.fingerprint)
            if rec.request_id and (used := self.by_request.get(rkey) or req.get(rkey)):
                same = used[0] == rec.request_hash
                status = InsertStatus.REQUEST_EXISTS if same else InsertStatus.REQUEST_REUSED
                outcomes.append(InsertOutcome(status, used[1]))
                aborted |= not same
            elif rec.deterministic and (hit := self.by_det.get(dkey) or det.get(dkey)):
                outcomes.append(InsertOutcome(InsertStatus.DETERMINISTIC_EXISTS, hit))
                if rec.request_id:
                    # Answered by an existing token: the id stays this request's.
                    req[rkey] = (rec.request_hash, hit)
                    reservations.append((rec.tenant, rec.request_id, rec.request_hash, hit.token))
            elif rec.token in self.taken or rec.token in taken:
                outcomes.append(InsertOutcome(InsertStatus.TOKEN_TAKEN))
                aborted = True
            else:
                outcomes.append(InsertOutcome(InsertStatus.INSERTED))
                pending.append(rec)
                taken.add(rec.token)
                if rec.deterministic:
                    det[dkey] = rec
                if rec.request_id:
                    req[rkey] = (rec.request_hash, rec)
        if aborted:
            # All or nothing: the caller draws new tokens and submits the call again
            # (or, for a reused request id, refuses it).
            # Outcomes that point at this call's own (now unwritten) records abort too,
            # but a reused request id stays reported (without the unwritten row).
            unwritten = {id(r) for r in pending}
            out = []
            for o in outcomes:
                if o.status is InsertStatus.REQUEST_REUSED:
                    out.append(o if id(o.existing) not in unwritten else InsertOutcome(o.status))
                elif o.status is InsertStatus.INSERTED or id(o.existing) in unwritten:
                    out.append(InsertOutcome(InsertStatus.ABORTED))
                else:
                    out.append(o)
            return out
        self.to_insert.extend(pending)
        self.reservations.extend(reservations)
        self.taken |= taken
        self.by_det.update(det)
        self.by_request.update(req)
        return outcomes
