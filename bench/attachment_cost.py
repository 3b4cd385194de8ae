"""The instructions `content.fingerprints` costs per message, by kind of message, for
callgrind (docs/performance.md, "What covering attachments costs (session 11)").

    cd /tmp && PYTHONHASHSEED=0 PYTHONPATH=CHECKOUT valgrind --tool=callgrind \\
        --callgrind-out-file=/dev/null python3 CHECKOUT/bench/attachment_cost.py KIND 201
    # and again with 1; KIND: single, alternative or pdf

Per message: (total at N = 201 - total at N = 1) / 200. The `sendguard` package measured is
the one the interpreter imports: with PYTHONPATH another checkout's (the script prints its
path on stderr), so an older content.py is measured the same way (`git archive REV
sendguard | tar -x -C /tmp/old`). Every copy carries its own token: no memo hits.
"""

from __future__ import annotations

import email.policy
import sys
from email.message import EmailMessage

from sendguard import content

HTML = (
    "<html><body><p>Spring is here, {tok}.</p>"
    + "".join(
        f'<p><a href="https://shop.example/p/{i}?uid={{tok}}">Product {i} now 20% off</a></p>'
        for i in range(12)
    )
    + "</body></html>"
)
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 400  # 100 KiB


def message(kind: str, token: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "shop@example.com"
    msg["To"] = "ann@example.net"
    msg["Subject"] = "Spring sale"
    page = HTML.replace("{tok}", token)
    if kind == "single":
        msg.set_content(page, subtype="html", cte="8bit")
    else:
        msg.set_content(f"Spring is here, {token}. https://shop.example/?uid={token}")
        msg.add_alternative(page, subtype="html")
        if kind == "pdf":
            msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="offer.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)


def main() -> None:
    kind, count = sys.argv[1], int(sys.argv[2])
    print(content.__file__, file=sys.stderr)
    raws = [message(kind, f"r{n:06d}") for n in range(count)]
    for raw in raws:
        content.fingerprints(raw)


if __name__ == "__main__":
    main()
