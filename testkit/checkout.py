"""The checkout this test support belongs to: where it is, a clean copy of it, and the environment under which
another Python process (a scratch pytest run, the box's moto server) imports testkit from it as tests do."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Dict, Mapping, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # testkit/ is at the checkout's top


def with_testkit(env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """`env` (default: this process's) with the checkout on PYTHONPATH: testkit is not installed, and pytest's
    own `pythonpath` setting reaches only the process it runs in."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    return env


def clean_copy(dest: str) -> str:
    """The files a fresh clone of this checkout would have (tracked, or new and not ignored; as they are on disk
    now) copied to `dest`: no venv, no build/ or *.egg-info left by earlier installs. Returns `dest`."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, timeout=60, check=True).stdout
    for rel in filter(None, listed.decode().split("\0")):
        source = os.path.join(REPO, rel)
        if not os.path.isfile(source):  # deleted in the work tree, not yet in the index
            continue
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)
    return dest
