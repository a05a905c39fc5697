"""The README's API examples, run as written with the host and token substituted."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.support.server import REPO_ROOT, JJHubServer


def api_examples() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Using the API", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README lost its API examples"
    return match.group(1)


def json_documents(text: str) -> list[dict]:
    decoder = json.JSONDecoder()
    documents, index = [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        document, index = decoder.raw_decode(text, index)
        documents.append(document)
    return documents


def test_readme_curl_examples_run_and_answer_with_the_contract_fields(data_dir: Path):
    with JJHubServer(data_dir).start() as server:
        token = server.create_user("admin", admin=True)
        script = api_examples().replace(
            "localhost:3000", f"127.0.0.1:{server.api_port}"
        )
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            env={"TOKEN": token, "PATH": "/usr/bin:/bin"},
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        repo, ssh, suspended, resumed = json_documents(result.stdout)
        assert repo["full_name"] == "admin/demo"
        assert ssh["command"].startswith(f"ssh -p {server.ssh_port} vm_")
        assert ssh["access_token"].startswith("ws_")
        assert {"workspace_id", "vm_id", "host", "port", "username"} <= ssh.keys()
        assert suspended["status"] == "suspended"
        assert resumed["status"] == "running"
        assert resumed["id"] == ssh["workspace_id"]
