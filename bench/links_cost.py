"""The instructions `targets_of_html` costs per message, for callgrind (docs/performance.md,
"What reading links as browsers do costs (session 11)").

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python3 bench/links_cost.py sendguard/links.py 201   # and again with 1

Per message: (total at N = 201 - total at N = 1) / 200. The module is loaded from the file
given, on its own (it needs only the standard library), so an older links.py
(`git show REV:sendguard/links.py > /tmp/links_old.py`) is measured the same way.

A third argument measures another path: `blast` (the same HTML every time: `targets_of_html`'s
memo), `text` (the page's text as a text/plain part reads, through `targets_of_text`).
"""

from __future__ import annotations

import importlib.util
import re
import sys

ITEMS = "".join(
    f'<tr><td><a href="https://click.esp.example/ls/click?upn={{tok}}-{i}&amp;e={{tok}}">'
    f'<img src="https://cdn.shop.example/p/{i}.jpg" alt="Product {i}" width="180"></a></td>'
    f'<td><a href="https://shop.example/p/{i}?utm_source=nl&amp;utm_medium=email&amp;uid={{tok}}">'
    f"Product {i} now 20% off</a></td></tr>"
    for i in range(8)
)
PAGE = (
    "<!doctype html><html><head><style>.h{background:url(https://cdn.shop.example/bg.png)}"
    '</style></head><body><table role="presentation" width="100%">' + ITEMS + "</table>"
    '<p><a href="https://shop.example/unsub?t={tok}">Unsubscribe</a> '
    '<img src="https://open.esp.example/o/{tok}.gif" width="1" height="1"></p></body></html>'
)
"""2,555 characters, 27 URLs; `{tok}` is each copy's per-recipient token."""


def main() -> None:
    path, count = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "personal"
    spec = importlib.util.spec_from_file_location("links_measured", path)
    assert spec is not None and spec.loader is not None
    links = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(links)
    if mode == "blast":  # one copy for all: memo hits after the first
        page = PAGE.replace("{tok}", "r000000Zx%3D%3D")
        for _ in range(count):
            links.targets_of_html(page)
    elif mode == "text":  # the text of each copy: its URLs bare
        text = re.sub(r"<[^>]*>", " ", PAGE.replace('<a href="', " ").replace('">', " "))
        for n in range(count):
            links.targets_of_text(text.replace("{tok}", f"r{n:06d}Zx%3D%3D"))
    else:  # every copy different: no memo hits
        for n in range(count):
            links.targets_of_html(PAGE.replace("{tok}", f"r{n:06d}Zx%3D%3D"))


if __name__ == "__main__":
    main()
