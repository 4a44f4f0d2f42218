"""``rerender_cli.py comfy-run``: run a workflow on a running ComfyUI server, headless, for batch jobs.

Example::

    python rerender_cli.py comfy-run --video clip.mp4 --prompt "a watercolor painting" \\
        --checkpoint v1-5-pruned-emaonly.safetensors --set "Keyframe Renderer.denoise=0.8"

It loads a workflow (default: the pack's ``workflows/rerender_video.json``; UI format as the
frontend saves it, or API format), converts a UI workflow to API format with the server's
``/object_info``, sets inputs by node title (``--set "TITLE.INPUT=VALUE"``; the shortcuts below set
the titles of the pack's workflows), uploads local videos to the server's input folder
(``/upload/image``), queues the prompt (``/prompt``), waits for it (``/history``) and lists — and
with ``--output-dir`` downloads (``/view``) — the files it wrote. Several ``--video`` run one after
the other, each saved under ``rerender/<video name>``. ``--export-api FILE`` writes the converted
prompt (e.g. for ``comfy run --workflow FILE`` of comfy-cli, which takes API format only).

Standard library only; it talks to the server address given (``--server``, default
``127.0.0.1:8188``) and nothing else. Also runs as a script:
``python custom_nodes/<pack>/cli/comfy_run.py …``.

Exit codes: 0 done, 1 the prompt failed or was rejected, 2 bad arguments or workflow, 3 server not
reachable, 4 timed out, 130 Ctrl-C (through ``rerender_cli.py``; queued prompts keep running on the server).
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

PACK_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKFLOW = PACK_ROOT / "workflows" / "rerender_video.json"
DEFAULT_SERVER = "127.0.0.1:8188"

#: Shortcut options → (node title, input) in the pack's workflows.
SHORTCUTS = {
    "video": ("Load Video", "video"),
    "prompt": ("Positive Prompt", "text"),
    "negative": ("Negative Prompt", "text"),
    "checkpoint": ("Load Checkpoint", "ckpt_name"),
    "controlnet": ("Load ControlNet", "control_net_name"),
    "seed": ("Keyframe Renderer", "seed"),
}
SAVE_TITLE, SAVE_PREFIX = "Save Video", "filename_prefix"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "upload")
UI_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SERVER, EXIT_TIMEOUT = 0, 1, 2, 3, 4


class RunError(Exception):
    """A failure with the exit code to end with."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- HTTP
class ComfyClient:
    """The few ComfyUI HTTP endpoints a scripted run needs (``host:port`` or ``http://host:port``)."""

    def __init__(self, server: str = DEFAULT_SERVER, timeout: float = 60.0) -> None:
        self.base = server if server.startswith(("http://", "https://")) else f"http://{server}"
        self.base = self.base.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _open(self, request: urllib.request.Request | str):
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as error:
            raise RunError(f"ComfyUI server {self.base} not reachable: {error}", EXIT_SERVER) from error

    def get_json(self, path: str) -> Any:
        with self._open(self.base + path) as response:
            return json.loads(response.read())

    def post_json(self, path: str, data: dict | None = None) -> Any:
        request = urllib.request.Request(self.base + path, data=json.dumps(data or {}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with self._open(request) as response:
            body = response.read()
        return json.loads(body) if body else None

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def upload(self, path: Path, overwrite: bool = True) -> str:
        """Upload a file to the server's input folder; returns the name nodes refer to it by."""
        boundary = uuid.uuid4().hex
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n".encode() + path.read_bytes() + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\n'
            f"{'true' if overwrite else 'false'}\r\n".encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        request = urllib.request.Request(self.base + "/upload/image", data=b"".join(parts), method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with self._open(request) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RunError(f"upload of {path} refused: HTTP {error.code} {error.read().decode(errors='replace')}")
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def queue(self, prompt: dict) -> str:
        """Queue an API-format prompt; returns its id. Raises RunError with the server's validation errors."""
        try:
            answer = self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})
        except urllib.error.HTTPError as error:
            raise RunError("prompt rejected:\n" + _describe_rejection(error.read().decode(errors="replace")))
        return answer["prompt_id"]

    def interrupt(self) -> None:
        self.post_json("/interrupt")

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 24 * 3600, poll: float = 2.0, on_wait=None) -> dict:
        """Wait until the prompt finished (success, error or interrupted); returns its history entry."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            entry = self.history(prompt_id)
            if entry is not None and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if on_wait is not None:
                on_wait()
            time.sleep(poll)
        raise RunError(f"prompt {prompt_id} did not finish in {timeout:.0f} s (it may still be running)",
                       EXIT_TIMEOUT)

    def download(self, item: dict, folder: Path) -> Path:
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        target = folder / item.get("subfolder", "") / item["filename"]
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._open(f"{self.base}/view?{query}") as response:
            target.write_bytes(response.read())
        return target


def _describe_rejection(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    lines = [str(data.get("error", {}).get("message", data.get("error")))]
    for node_id, problem in (data.get("node_errors") or {}).items():
        for error in problem.get("errors", []):
            lines.append(f"  node {node_id} ({problem.get('class_type')}): {error.get('message')}: "
                         f"{error.get('details')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- UI → API
def _spec_type(spec: Any) -> Any:
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    return "COMBO" if isinstance(kind, list) else kind


def _spec_options(spec: Any) -> dict:
    return spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}


def _is_widget(spec: Any) -> bool:
    return _spec_type(spec) in WIDGET_TYPES and not _spec_options(spec).get("forceInput")


def _has_control(name: str, spec: Any) -> bool:
    """Whether the frontend stores a control_after_generate value after this widget."""
    flag = _spec_options(spec).get("control_after_generate")
    if flag is not None:
        return bool(flag)
    return _spec_type(spec) == "INT" and name in ("seed", "noise_seed")


def _ordered_inputs(info: dict) -> list[tuple[str, Any]]:
    order = info.get("input_order") or {section: list(values) for section, values in (info.get("input") or {}).items()}
    found = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = (info.get("input") or {}).get(section, {}).get(name)
            if spec is not None:
                found.append((name, spec))
    return found


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow (``nodes`` + ``links``, as the frontend saves it) to API format.

    Widget values are matched to the node's widget inputs in ``/object_info`` order, skipping the
    extra values the frontend stores (``control_after_generate`` after seeds, the upload button's
    value); missing trailing values take the input's default. Links, Reroute, PrimitiveNode, muted
    (mode 2) and bypassed (mode 4) nodes and Notes are handled; subgraphs and group nodes are not.

    Raises:
        RunError: a node type the server does not know, or a subgraph.
    """
    nodes = {node["id"]: node for node in workflow.get("nodes", [])}
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):
            links[link["id"]] = (link["origin_id"], link["origin_slot"])
        else:
            links[link[0]] = (link[1], link[2])
    subgraphs = {graph.get("id") for graph in (workflow.get("definitions") or {}).get("subgraphs", [])}
    problems = [f"node {node['id']}: unknown node type '{node.get('type')}' (custom node pack not installed?)"
                for node in nodes.values()
                if node.get("type") not in object_info and node.get("type") not in UI_ONLY_NODES
                and node.get("mode", 0) not in (2, 4)]
    problems += [f"node {node['id']} is a subgraph; export the workflow in API format" for node in nodes.values()
                 if node.get("type") in subgraphs]
    if problems:
        raise RunError("workflow cannot be converted:\n  " + "\n  ".join(problems), EXIT_USAGE)

    def resolve(link_id: Any, depth: int = 0):
        if link_id is None or link_id not in links or depth > 64:
            return None
        origin_id, slot = links[link_id]
        origin = nodes.get(origin_id)
        if origin is None:
            return None
        kind, mode = origin.get("type"), origin.get("mode", 0)
        if kind == "Reroute":
            inputs = origin.get("inputs") or []
            return resolve(inputs[0].get("link") if inputs else None, depth + 1)
        if kind == "PrimitiveNode":
            values = origin.get("widgets_values") or []
            return ("value", values[0] if values else None)
        if mode == 2:
            return None
        if mode == 4:  # bypassed: pass the first input of the same type through
            outputs = origin.get("outputs") or []
            wanted = outputs[slot].get("type") if slot < len(outputs) else None
            for item in origin.get("inputs") or []:
                if item.get("link") is not None and item.get("type") == wanted:
                    return resolve(item["link"], depth + 1)
            return None
        return ("link", [str(origin_id), slot])

    prompt = {}
    for node_id, node in nodes.items():
        kind, mode = node.get("type"), node.get("mode", 0)
        if kind in UI_ONLY_NODES or mode in (2, 4):
            continue
        info = object_info[kind]
        ordered = _ordered_inputs(info)
        sockets = {item.get("name") for item in node.get("inputs") or [] if not item.get("widget")}
        widgets = [(name, spec) for name, spec in ordered if _is_widget(spec) and name not in sockets]
        inputs: dict[str, Any] = {}
        values = node.get("widgets_values")
        if isinstance(values, dict):
            inputs.update({name: values[name] for name, _ in widgets if name in values})
        elif isinstance(values, list):
            position = 0
            for name, spec in widgets:
                if position >= len(values):
                    break
                inputs[name] = values[position]
                position += 1
                if (_has_control(name, spec) and position < len(values) and isinstance(values[position], str)
                        and values[position] in CONTROL_VALUES):
                    position += 1
                if any(_spec_options(spec).get(flag) for flag in UPLOAD_FLAGS) and position < len(values) and \
                        values[position] in ("image", "video", "audio", "file", None):
                    position += 1
        for name, spec in widgets:  # values the file does not have: the defaults
            if name not in inputs:
                options = _spec_options(spec)
                if "default" in options:
                    inputs[name] = options["default"]
                elif isinstance(spec[0], list) and spec[0]:
                    inputs[name] = spec[0][0]
                elif options.get("options"):
                    inputs[name] = options["options"][0]
        for item in node.get("inputs") or []:
            name = (item.get("widget") or {}).get("name") or item.get("name")
            resolved = resolve(item.get("link"))
            if resolved is not None:
                inputs[name] = resolved[1]
        title = node.get("title") or info.get("display_name") or kind
        prompt[str(node_id)] = {"class_type": kind, "inputs": inputs, "_meta": {"title": title}}
    return prompt


def load_prompt(path: Path, client: ComfyClient | None = None, object_info: dict | None = None) -> dict:
    """An API-format prompt from a workflow file (UI format is converted with the server's /object_info)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise RunError(f"cannot read workflow {path}: {error}", EXIT_USAGE) from error
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        if object_info is None:
            object_info = client.object_info()
        return ui_to_api(data, object_info)
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return data
    raise RunError(f"{path}: neither a UI workflow (nodes/links) nor an API prompt", EXIT_USAGE)


# --------------------------------------------------------------------------- setting inputs
def find_nodes(prompt: dict, title: str) -> list[str]:
    """Ids of the nodes whose title (or id, or class) is ``title`` (case-insensitive)."""
    wanted = title.strip().lower()
    by_title = [node_id for node_id, node in prompt.items()
                if str(node.get("_meta", {}).get("title", "")).lower() == wanted]
    if by_title:
        return by_title
    if title.strip() in prompt:
        return [title.strip()]
    return [node_id for node_id, node in prompt.items() if node["class_type"].lower() == wanted]


def set_input(prompt: dict, title: str, name: str, value: Any, object_info: dict | None = None) -> str:
    """Set input ``name`` of the node titled ``title``; returns its id.

    Raises:
        RunError: no such node, several nodes of that title, or no such input.
    """
    found = find_nodes(prompt, title)
    titles = sorted({str(node.get("_meta", {}).get("title")) for node in prompt.values()})
    if not found:
        raise RunError(f"no node titled '{title}'; titles in this workflow: {', '.join(titles)}", EXIT_USAGE)
    if len(found) > 1:
        raise RunError(f"{len(found)} nodes titled '{title}' (ids {', '.join(found)}); use the node id instead",
                       EXIT_USAGE)
    node = prompt[found[0]]
    if object_info is not None and node["class_type"] in object_info:
        known = {n for n, _ in _ordered_inputs(object_info[node["class_type"]])}
        if name not in known and name not in node["inputs"]:
            raise RunError(f"node '{title}' ({node['class_type']}) has no input '{name}'; inputs: "
                           f"{', '.join(sorted(known))}", EXIT_USAGE)
    node["inputs"][name] = value
    return found[0]


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """``"TITLE.INPUT=VALUE"`` → ``(title, input, value)``; VALUE is JSON when it parses, else text.

    Example:
        >>> parse_assignment("Keyframe Renderer.denoise=0.8")
        ('Keyframe Renderer', 'denoise', 0.8)
        >>> parse_assignment("Positive Prompt.text=a cat, oil painting")
        ('Positive Prompt', 'text', 'a cat, oil painting')
    """
    target, separator, raw = text.partition("=")
    title, dot, name = target.rpartition(".")
    if not separator or not dot or not title or not name:
        raise RunError(f"--set expects TITLE.INPUT=VALUE, got {text!r}", EXIT_USAGE)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return title.strip(), name.strip(), value


# --------------------------------------------------------------------------- reporting
def output_files(entry: dict) -> list[dict]:
    """Files listed in a history entry's outputs (images, videos, …) with the node that wrote them."""
    files = []
    for node_id, outputs in (entry.get("outputs") or {}).items():
        for items in outputs.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and "filename" in item:
                    files.append({**item, "node": node_id})
    return files


def error_message(entry: dict) -> str:
    """The execution error (or interruption) of a failed history entry, as text."""
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            trace = "".join(data.get("traceback") or [])[-2000:]
            return (f"node {data.get('node_id')} ({data.get('node_type')}): {data.get('exception_type')}: "
                    f"{data.get('exception_message')}\n{trace}")
        if kind == "execution_interrupted":
            return f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"
    return json.dumps(entry.get("status"))


def keyframe_reports(entry: dict) -> list[dict]:
    """What every Rerender Keyframe Renderer reported (rendered / cached keyframes, resume point)."""
    return [report for outputs in (entry.get("outputs") or {}).values()
            for report in outputs.get("rerender_keyframes", [])]


# --------------------------------------------------------------------------- command
def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``comfy-run`` command."""
    parser = subparsers.add_parser(
        "comfy-run", help="run a workflow (default: rerender_video.json) on a running ComfyUI server",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run, interrupted="stopped waiting; prompts already queued keep running on the server "
                                              "(cancel them in ComfyUI's queue); run the same command again to "
                                              "queue again, reusing the keyframes the server has cached")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW,
                        help=f"workflow JSON, UI or API format (default: {DEFAULT_WORKFLOW.name} of the pack)")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="ComfyUI address host:port (default %(default)s)")
    parser.add_argument("--video", action="append", default=[],
                        help="video: a local file (uploaded) or a name in the server's input folder; repeat for "
                             "a batch (one run each)")
    parser.add_argument("--prompt", help="positive prompt (node 'Positive Prompt')")
    parser.add_argument("--negative", help="negative prompt (node 'Negative Prompt')")
    parser.add_argument("--checkpoint", help="checkpoint file name in models/checkpoints (node 'Load Checkpoint')")
    parser.add_argument("--controlnet", help="ControlNet file name in models/controlnet (node 'Load ControlNet')")
    parser.add_argument("--seed", type=int, help="keyframe noise seed (node 'Keyframe Renderer')")
    parser.add_argument("--set", action="append", default=[], metavar="TITLE.INPUT=VALUE",
                        help="set any input by node title (or id), e.g. 'Keyframe Selection.keyframe_interval=8'; "
                             "VALUE is JSON or text")
    parser.add_argument("--output-dir", type=Path, help="download the files the run wrote into this folder")
    parser.add_argument("--export-api", type=Path, help="also write the converted API-format prompt here")
    parser.add_argument("--dry-run", action="store_true", help="convert and set inputs, but do not queue")
    parser.add_argument("--timeout", type=float, default=24 * 3600, help="seconds to wait per run")


def build_prompts(args: argparse.Namespace, client: ComfyClient) -> list[tuple[str, dict]]:
    """``(label, prompt)`` per run: the workflow with the arguments applied (uploads local videos)."""
    object_info = client.object_info()
    base = load_prompt(args.workflow, client, object_info)
    for name in ("prompt", "negative", "checkpoint", "controlnet", "seed"):
        value = getattr(args, name)
        if value is not None:
            set_input(base, *SHORTCUTS[name], value, object_info)
    explicit = [parse_assignment(text) for text in args.set]
    for title, name, value in explicit:
        set_input(base, title, name, value, object_info)
    prefix_set = any(title.lower() == SAVE_TITLE.lower() and name == SAVE_PREFIX for title, name, _ in explicit)
    runs = []
    for video in args.video or [None]:
        prompt = json.loads(json.dumps(base))
        label = "workflow"
        if video is not None:
            path = Path(video).expanduser()
            name = client.upload(path) if path.is_file() and not args.dry_run else video
            set_input(prompt, *SHORTCUTS["video"], name, object_info)
            label = Path(video).name
            if not prefix_set and find_nodes(prompt, SAVE_TITLE):
                set_input(prompt, SAVE_TITLE, SAVE_PREFIX, f"rerender/{Path(video).stem}", object_info)
        runs.append((label, prompt))
    return runs


def run(args: argparse.Namespace) -> int:
    """Handler of ``comfy-run``; returns the exit code."""
    try:
        return _run(args)
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code


def _run(args: argparse.Namespace) -> int:
    client = ComfyClient(args.server)
    runs = build_prompts(args, client)
    if args.export_api:
        exported = runs[0][1] if len(runs) == 1 else {label: prompt for label, prompt in runs}
        args.export_api.write_text(json.dumps(exported, indent=2))
        print(f"API prompt written to {args.export_api}")
    if args.dry_run:
        return EXIT_OK
    failed = 0
    for label, prompt in runs:
        started = time.time()
        prompt_id = client.queue(prompt)
        print(f"[{label}] queued as {prompt_id} on {client.base}")
        entry = client.wait(prompt_id, args.timeout)
        elapsed = time.time() - started
        if entry["status"].get("status_str") != "success":
            failed += 1
            print(f"[{label}] FAILED after {elapsed:.0f} s: {error_message(entry)}", file=sys.stderr)
            continue
        print(f"[{label}] done in {elapsed:.0f} s")
        for report in keyframe_reports(entry):
            print(f"[{label}] keyframes {report.get('indices')}: rendered {report.get('rendered')}, "
                  f"from cache {report.get('cached')}")
        for item in output_files(entry):
            where = f"{item.get('type', 'output')}/{item.get('subfolder') + '/' if item.get('subfolder') else ''}"
            line = f"[{label}] wrote {where}{item['filename']}"
            if args.output_dir is not None and item.get("type", "output") == "output":
                line += f" -> {client.download(item, args.output_dir)}"
            print(line)
    return EXIT_FAILED if failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point when run as a script."""
    parser = argparse.ArgumentParser(prog="comfy_run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
