"""The README's standalone set-up, main job and test command, run exactly as written in a fresh venv.

The blocks are the fenced ``bash`` blocks after the ``<!-- readme-check: NAME -->`` markers in
README.md. The checkout (tracked and not-ignored files) is copied to ``<tmp>/rerender-video``; the
set-up block runs from ``<tmp>`` with its ``git clone`` line left out (the copy stands for the clone),
then the main-job and test blocks run where the set-up left the shell, in one bash session. The
environment is a new user's: no venv active, no ComfyUI, a fresh cache and numba cache.

Takes about 7 minutes on 2 cores (venv install, the whole bundled job, the whole suite again), so it
runs in CI (``CI`` set, as ``.ci/run`` does) or with ``RERENDER_README_CHECK=1``, and is skipped
otherwise, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import av
import pytest

ROOT = Path(__file__).resolve().parents[1]
INNER = "RERENDER_README_CHECK_INNER"
#: About 7 minutes on an idle 2-core machine; a machine shared with other jobs can take many times that.
TIMEOUT_S = 75 * 60
BLOCK = re.compile(r"<!-- readme-check: (?P<name>[\w-]+) -->\s*```bash\n(?P<body>.*?)```", re.S)


def readme_blocks() -> dict[str, list[str]]:
    """The marked bash blocks of README.md, as lists of command lines."""
    blocks = {match["name"]: [line for line in match["body"].splitlines() if line.strip()]
              for match in BLOCK.finditer((ROOT / "README.md").read_text())}
    return blocks


def test_readme_marks_the_blocks_it_promises():
    blocks = readme_blocks()
    assert set(blocks) == {"setup", "main-job", "tests"}
    assert blocks["setup"][0].startswith("git clone ") and blocks["setup"][1] == "cd rerender-video"
    assert blocks["tests"][-1] == "python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    for command in blocks["setup"][2:] + blocks["tests"]:  # CI runs the same set-up and test commands
        assert command in ci.splitlines(), command


def _copy_checkout(target: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def _fresh_user_environment(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "COMFYUI_ROOT", "NUMBA_CACHE_DIR",
                          "RERENDER_CACHE_DIR", "PYTEST_ADDOPTS"}}
    venv_bin = str(Path(sys.prefix, "bin")) if sys.prefix != sys.base_prefix else None
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep) if part != venv_bin)
    env.update({"XDG_CACHE_HOME": str(home / ".cache"), INNER: "1"})
    return env


@pytest.mark.slow
def test_readme_commands_work_in_a_fresh_venv(tmp_path):
    if os.environ.get(INNER):
        pytest.skip("inside the README check's own test run")
    if not (os.environ.get("CI") or os.environ.get("RERENDER_README_CHECK")):
        pytest.skip("README check (about 7 min): runs in CI, or set RERENDER_README_CHECK=1")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to copy")
    blocks = readme_blocks()
    _copy_checkout(tmp_path / "rerender-video")
    script = ["set -euo pipefail", f"cd {tmp_path}"]
    script += [line for line in blocks["setup"] if not line.startswith("git clone ")]
    script += ['echo "== main job"'] + blocks["main-job"] + ['echo "== tests"'] + blocks["tests"]
    log = tmp_path / "readme.log"
    with log.open("w") as output:
        shell = subprocess.Popen(["bash", "-c", "\n".join(script)], stdout=output, stderr=subprocess.STDOUT,
                                 env=_fresh_user_environment(tmp_path), start_new_session=True)
        try:
            returncode = shell.wait(timeout=TIMEOUT_S)
        finally:
            if shell.poll() is None:  # timed out: stop the whole session (pip, the job, the inner pytest)
                os.killpg(shell.pid, signal.SIGKILL)
                shell.wait()
    text = log.read_text()
    assert returncode == 0, text[-6000:]

    job = text[text.index("== main job"):text.index("== tests")]
    assert "compiling the CPU kernels, once per install" in job  # a fresh install compiles numba's kernels
    assert re.search(r"frames \d+/270 \(\d+%, .*ETA ", job), job[-3000:]
    assert "wrote megamind_propagated.mp4: 270 frames at 360x264, 23.976 fps" in job
    with av.open(str(tmp_path / "rerender-video" / "megamind_propagated.mp4")) as container:
        assert container.streams.video[0].frames == 270 and len(container.streams.audio) == 1

    tests = text[text.index("== tests"):]
    summary = tests.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "failed" not in summary and "error" not in summary, tests[-3000:]
