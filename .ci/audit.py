"""`make audit`: pip-audit of requirements.lock; fails only on a known vulnerability.

pip-audit also exits non-zero when it cannot reach an advisory database or cannot find a
package there; those are reported as warnings (nothing was audited), not as findings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    lock = Path(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock")
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "audit.json"
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("pip-audit")),
                *("-r", str(lock), "--no-deps", "--disable-pip", "--progress-spinner", "off"),
                *("--format", "json", "--output", str(report)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        text = report.read_text() if report.exists() else ""
    if not text.strip():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"warning: pip-audit could not audit {lock}: {last}", file=sys.stderr)
        return 0
    dependencies = json.loads(text).get("dependencies", [])
    found = [(d, v) for d in dependencies for v in d.get("vulns", [])]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    for dep, vuln in found:
        fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed release yet"
        print(f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixes})")
    if skipped:
        print(
            f"warning: {len(skipped)} of {len(dependencies)} packages could not be audited"
            f" ({skipped[0]['name']}: {skipped[0]['skip_reason']})",
            file=sys.stderr,
        )
    print(f"pip-audit: {len(found)} known vulnerabilities in {len(dependencies)} locked packages")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
