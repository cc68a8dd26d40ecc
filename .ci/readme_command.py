"""Print the README's command block named NAME (``<!-- readme-command: NAME ... -->``).

CI runs the README's commands from here, so the README and CI cannot drift apart.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

BLOCK = re.compile(
    r"<!-- readme-command: (?P<name>[\w-]+)[^>]*-->\s*\n```(?:bash|sh)\n(?P<body>.*?)```",
    re.DOTALL,
)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: readme_command.py README NAME", file=sys.stderr)
        return 2
    readme, name = Path(argv[0]), argv[1]
    blocks = {m["name"]: m["body"] for m in BLOCK.finditer(readme.read_text("utf-8"))}
    if name not in blocks:
        found = ", ".join(sorted(blocks)) or "none"
        print(f"{readme}: no command block named {name!r} (found: {found})", file=sys.stderr)
        return 1
    sys.stdout.write(blocks[name])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
