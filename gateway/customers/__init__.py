"""One customer across channels: identities verified and claimed, link suggestions, codes,
merges and unmerges (with their audit), and the customer 360 agents see (docs/customers.md).

- ``addresses``: one spelling per kind (email lowercase, phone E.164);
- ``directory``: identify a contact, suggest, link, merge, unmerge;
- ``signed``: the web chat's signed identity (HMAC-SHA256 with the channel's identity_secret);
- ``codes``: one-time codes, hashed, compared in constant time;
- ``view``: the 360; ``desk``: the agent's and visitor's frames about customers.
"""

from .addresses import BadAddress, normalise
from .codes import VerificationCodes
from .directory import CustomerDirectory

__all__ = ["BadAddress", "CustomerDirectory", "VerificationCodes", "normalise"]
