"""Print the N-th fenced bash block of the README's '## Quickstart' section (1-based)."""

import re
import sys
from pathlib import Path

text = Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
section = re.search(r"^## Quickstart\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
if section is None:
    sys.exit("README.md has no '## Quickstart' section")
blocks = re.findall(r"```bash\n(.*?)```", section.group(1), re.S)
index = int(sys.argv[1]) - 1
if not 0 <= index < len(blocks):
    sys.exit(f"the Quickstart has {len(blocks)} bash blocks, not {index + 1}")
print(blocks[index], end="")
