"""Print the Nth set-up command of README.md (the fenced shell blocks under "Set up")."""

import re
import sys
from pathlib import Path

text = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
blocks = re.findall(r"<!-- setup-(\d) -->\s*```(?:sh|bash|console)?\n(.*?)```", text, re.S)
wanted = sys.argv[1]
for number, body in blocks:
    if number == wanted:
        print(" ".join(line.strip().rstrip("\\").strip() for line in body.strip().splitlines()))
        sys.exit(0)
sys.exit(f"README.md has no set-up command {wanted}")
