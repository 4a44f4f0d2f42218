"""The command line as a newcomer meets it: option names in errors, --frames past the end, an
unwritable output refused before any work, progress with percentage and ETA, Ctrl-C.

Runs on the bundled Megamind.avi and its keyframes; the Ctrl-C and read-only checks run
``rerender_cli.py`` in a child process, as a user would.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from rerender_video.cli import _progress, main
from rerender_video.cli._messages import OptionNames
from rerender_video.common.errors import NodeFix, input_error

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "rerender_cli.py"
#: The loader's widget names: a command-line user never typed them, so no CLI message may show them.
WIDGET_NAMES = ("frame_load_cap", "skip_first_frames", "select_every_nth", "force_rate", "custom_width",
                "custom_height", "size_multiple")


@pytest.fixture
def keys(megamind_path) -> Path:
    return megamind_path.parent / "megamind_keys"


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(part) for part in argv])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def assert_one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not any(name in err for name in WIDGET_NAMES), err
    assert "upload" not in err and "ComfyUI" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------ errors name the options

@pytest.mark.parametrize("command, options, expected", [
    ("propagate", ["--frames", "-1"], r"^error: --frames: Expected a whole number >= 0, Got: -1\. Fix: set --frames "),
    ("propagate", ["--skip", "400"], r"^error: --skip: Expected fewer than 270 .* set --skip to at most 269"),
    ("propagate", ["--patch-size", "4"], r"^error: --patch-size: Expected an odd integer"),
    ("flow", ["--every", "0"], r"^error: --every: Expected a whole number >= 1, Got: 0\. Fix: set --every to 1"),
    ("flow", ["--width", "-8"], r"^error: --width: Expected"),
])
def test_errors_name_the_option_the_user_typed(command, options, expected, megamind_path, keys, tmp_path, capsys):
    inputs = [megamind_path, keys] if command == "propagate" else [megamind_path]
    code, _, err = run_cli([command, *inputs, *options, "--output", tmp_path / "out.mp4"], capsys)
    assert code == 2
    assert re.search(expected, assert_one_error_line(err)), err


def test_missing_video_gets_no_node_only_advice(keys, tmp_path, capsys):
    code, _, err = run_cli(["propagate", tmp_path / "nothere.mp4", keys, "--output", tmp_path / "out.mp4"], capsys)
    assert code == 2
    line = assert_one_error_line(err)
    assert line == (f"error: video: Expected an existing video file, Got: {tmp_path / 'nothere.mp4'}. "
                    "Fix: check the path (absolute, or relative to the current folder).")


def test_memory_error_lists_the_fixes_this_command_has(megamind_path, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("rerender_video.common.memory.available_bytes", lambda: 20 * 720 * 528 * 3 * 4)
    code, _, err = run_cli(["flow", megamind_path, "--output", tmp_path / "out.mp4"], capsys)
    assert code == 2
    line = assert_one_error_line(err)
    assert line.startswith("error: --frames: Expected decoded frames")
    assert all(text in line for text in ["--frames", "raise --every (now 1)", "--width / --height"]), line
    assert "force" not in line, line


def test_segment_memory_guard_speaks_in_options_before_any_work(megamind_path, keys, tmp_path, monkeypatch,
                                                                capsys):
    """propagate streams segment by segment: its guard is one segment's need, not the clip's length."""
    monkeypatch.setattr("rerender_video.segments.memory.available_bytes", lambda: 8 * 2**20)
    code, out, err = run_cli(["propagate", megamind_path, keys, "--width", 720, "--output", tmp_path / "out.mp4"],
                             capsys)
    assert code == 2
    note, line = err.strip().splitlines()  # the resize note, then one error line
    assert note.startswith("note: keyframes resized"), err
    assert line.startswith("error: keyframes: Expected segments whose frames, flows and candidates fit"), line
    assert "at 720x528" in line and "--width / --height (now 720x528)" in line and "custom_" not in line, line
    assert "segments:" not in out and not (tmp_path / "out.mp4").exists()  # refused before the engine started


def test_option_names_rewrite_only_whole_input_names():
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", dest="frame_load_cap", type=int)
    parser.add_argument("--crf", type=int)
    parser.add_argument("-o", "--output")
    names = OptionNames(parser, node_inputs={"frame_load_cap", "select_every_nth", "crf"})
    assert names.text("set frame_load_cap to 8; my_frame_load_cap.mp4 and /x/frame_load_cap/ stay") == (
        "set --frames to 8; my_frame_load_cap.mp4 and /x/frame_load_cap/ stay")
    error = input_error("crf", "0 to 51", 60, ["use crf 19", NodeFix("turn the crf widget"),
                                              "raise select_every_nth", "lower frame_load_cap"])
    assert names.error(error) == "--crf: Expected 0 to 51, Got: 60. Fixes: (1) use --crf 19. (2) lower --frames."
    assert names.options["output"] == "--output"


def test_frames_past_the_end_loads_the_frames_there_are_with_a_note(megamind_path, tmp_path, capsys):
    output = tmp_path / "flow.mp4"
    code, out, err = run_cli(["flow", megamind_path, "--frames", 1000, "--skip", 266, "--width", 64,
                              "--output", output], capsys)
    assert code == 0, err
    assert "note: video: --frames 1000 is past the end of Megamind.avi: loaded the 4 frames there are" in err
    assert "loaded 4 frames" in out
    with av.open(str(output)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3  # one preview frame per consecutive pair


def test_help_says_what_frames_does(capsys):
    with pytest.raises(SystemExit):
        main(["propagate", "-h"])
    assert "past the end loads the frames there are" in " ".join(capsys.readouterr().out.split())


# ---------------------------------------------------------------------------------- output checks

def test_unwritable_output_is_refused_before_any_work(read_only_dir, megamind_path, keys):
    folder, prefix = read_only_dir
    started = time.perf_counter()
    result = subprocess.run([*prefix, sys.executable, str(CLI), "propagate", str(megamind_path), str(keys),
                             "--output", str(folder / "out.mp4")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    line = assert_one_error_line(result.stderr)
    assert line.startswith(f"error: --output: Expected a folder where the file can be written, Got: {folder} (")
    assert result.stdout == ""  # nothing loaded, no flow, no propagation
    cache = Path(os.environ["RERENDER_CACHE_DIR"])
    assert not any(cache.rglob("*")), list(cache.rglob("*"))
    assert time.perf_counter() - started < 60  # the whole job takes minutes


def test_output_that_is_a_folder_is_refused(megamind_path, tmp_path, capsys):
    code, out, err = run_cli(["flow", megamind_path, "--output", tmp_path], capsys)
    assert code == 2 and out == ""
    assert assert_one_error_line(err).startswith(f"error: --output: Expected a file name, Got: {tmp_path}, which is")


# ------------------------------------------------------------------------------------------ progress

def test_plain_progress_lines_give_percentage_and_eta(monkeypatch):
    """The ETA counts from the first update: the first unit (kernel compile, warm-up) does not inflate it."""
    clock = iter([0.0, 60.0, 70.0, 80.0, 90.0, 100.0])
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    progress = _progress.Progress("propagated frames", 10, stream=stream, seconds=5)
    for done in (1, 2, 3, 4, 10):
        progress(done)
    assert stream.getvalue().splitlines() == [
        "  propagated frames 1/10 (10%, 1 min 00 s)",
        "  propagated frames 2/10 (20%, 1 min 10 s, ETA 1 min 20 s)",
        "  propagated frames 3/10 (30%, 1 min 20 s, ETA 1 min 10 s)",
        "  propagated frames 4/10 (40%, 1 min 30 s, ETA 1 min 00 s)",
        "  propagated frames 10/10 (100%, 1 min 40 s)",
    ]
    assert _progress.last_step() == "propagated frames 10/10"


def test_terminal_progress_is_a_tqdm_bar():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = _progress.Progress("flow pairs", 10, stream=stream)
    for done in range(1, 11):
        progress(done)
    assert re.search(r"flow pairs 100%\|[█#]+\| 10/10", stream.getvalue()), stream.getvalue()


def test_kernel_compile_note_only_when_numba_must_compile(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("rerender_video.propagation.backends.passes.kernels_cached", lambda: True)
    assert not _progress.note_kernel_compile(stream)
    monkeypatch.setattr("rerender_video.propagation.backends.passes.kernels_cached", lambda: False)
    assert _progress.note_kernel_compile(stream)
    assert stream.getvalue() == "compiling the CPU kernels, once per install (about 30 s) …\n"


def test_kernels_cached_reads_numba_index(tmp_path):
    """An empty numba cache folder means the next synthesis compiles; a filled one (this run's) does not."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from rerender_cli import load_pack; load_pack(); "
            "from rerender_video.propagation.backends.passes import kernels_cached; print(kernels_cached())")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    empty = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, env=env)
    assert empty.stdout.strip() == "False", empty.stderr
    import torch

    from rerender_video.propagation.backends.passes import kernels_cached
    from rerender_video.propagation.synthesis import Guide, synthesize

    frame = torch.rand(24, 24, 3)
    synthesize(frame, [Guide(frame, frame, 1.0)], backend="cpu")  # compiles into (or loads from) the pack's cache
    assert kernels_cached()


# ------------------------------------------------------------------------------------------- Ctrl-C

def test_ctrl_c_prints_one_line_and_exits_130(megamind_path, keys, tmp_path):
    output = tmp_path / "out.mp4"
    child = subprocess.Popen([sys.executable, str(CLI), "propagate", str(megamind_path), str(keys), "--width", "128",
                              "--output", str(output)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"},
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background
    # job (a CI runner, `cmd &`) inherits SIGINT ignored; a user's terminal delivers it
    try:
        for line in child.stdout:
            if line.startswith("segments: "):  # the video is indexed; the segment engine starts
                break
        time.sleep(2)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130, err
    *notes, last = err.strip().splitlines()
    assert notes == ["note: keyframes resized from 360x264 to the frames' 128x88"], err  # no traceback
    assert re.fullmatch(r"interrupted during frames \d+/270: finished work is kept in the cache "
                        rf"\({re.escape(os.environ['RERENDER_CACHE_DIR'])}\), no output file was written; run the "
                        r"same command again to resume", last), err
    assert not output.exists() and not any(".part" in path.name for path in tmp_path.iterdir())
