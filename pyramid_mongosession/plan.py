"""The plan for the end of a request: what happens to the cookie and in the store.

:func:`decide` is the precedence table of ``docs/options.rst``, case by
case (a test keeps the two equal); :mod:`pyramid_mongosession.lifecycle`
carries the plan out.
"""
from __future__ import annotations

import datetime
from typing import NamedTuple, Optional, Tuple

# What happens to the cookie.
KEEP = 'keep'          # no Set-Cookie (but see Expiry: a persistent cookie slides)
NEW_ID = 'new id'      # set a cookie naming a fresh id
CLEAR = 'clear'        # clear the cookie
# What happens in the store.
NOTHING = 'nothing'
INSERT = 'insert'      # a new document under the new id
UPDATE = 'update'      # the changed keys, or else an expiry refresh when one is due
MOVE = 'move'          # change_id: the data under the new id, the old document deleted


class Plan(NamedTuple):
    """A cookie action, a store action, and whether the loaded document is deleted."""

    cookie: str
    store: str
    remove_loaded: bool


#: A plan for the cookie, and the expiry refresh that slides a persistent cookie (or None).
Outcome = Tuple[Plan, Optional['datetime.datetime']]
#: Nothing happens: no Set-Cookie, nothing stored.
LEAVE_ALONE = Plan(KEEP, NOTHING, False)


def decide(flags: dict[str, bool], loaded: bool, invalidated: bool, has_data: bool,
           had_cookie: bool) -> Plan:
    """The plan for a session at the end of a request.

    ``flags`` are the session's options; ``loaded`` says whether the request
    loaded a stored session, ``invalidated`` whether it called
    ``invalidate()``, ``has_data`` whether the session holds any key now, and
    ``had_cookie`` whether the request sent a session cookie at all. The
    numbered cases are the rows of the precedence table in ``docs/options.rst``;
    the first that applies wins.
    """
    ended = CLEAR if loaded or had_cookie else KEEP
    # change_id beats no_store, as both must update the store.
    stores = flags['change_id'] or not flags['no_store']
    # 1. expire beats everything: the document goes, nothing is stored.
    if flags['expire']:
        return Plan(ended, NOTHING, loaded)
    if loaded and not invalidated:
        # 2. A stored session moves under a new id.
        if flags['change_id']:
            return Plan(NEW_ID, MOVE, False)
        # 3. no_store: nothing is written.
        if not stores:
            return Plan(KEEP, NOTHING, False)
        # 4. Otherwise its changes are written, or its expiry refreshed.
        return Plan(KEEP, UPDATE, False)
    # 5. A new or invalidated session gets an id once it has something to
    #    store; under late_store the body may still store something, so it gets one now.
    if stores and (has_data or flags['late_store']):
        return Plan(NEW_ID, INSERT, loaded)
    # 6. Nothing to store: a cookie that named a session is cleared.
    return Plan(ended, NOTHING, loaded)
