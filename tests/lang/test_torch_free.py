"""The language layer never imports torch or numpy."""

from __future__ import annotations

import subprocess
import sys


def test_language_layer_is_torch_free():
    code = (
        "import sys\n"
        "import energyql\n"
        "import energyql.lang, energyql.lang.api, energyql.lang.check, energyql.lang.render\n"
        "import energyql.cli.check\n"
        "energyql.compile('clip(\"a face\") & uniform(race x age) | then debias(clip_bias)',"
        " gen='stylegan2-ffhq').tree()\n"
        "print(','.join(m for m in ('torch', 'numpy') if m in sys.modules) or 'clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"
