"""`Unavailable`: the one name, in every service, for "a dependency did not answer; try later".

Free of I/O imports, so ports and handlers can name it and stay pure.
"""

from __future__ import annotations


class Unavailable(Exception):
    """NATS, JetStream, Postgres, the job-store or Replicate did not answer now. HTTP edges
    answer `503` with `Retry-After`; consumers hand the message back for redelivery."""
