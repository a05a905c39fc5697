"""The SSH gateway with the stock OpenSSH client, against real runc workspaces."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import shlex
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import httpx
import pytest

from tests.support.server import JJHubServer, free_port

OPTIONS = [
    "-F", "/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "BatchMode=yes",
    "-o", "LogLevel=ERROR",
]  # fmt: skip


@pytest.fixture(scope="module")
def server(xfs_root: Path) -> Iterator[JJHubServer]:
    data_dir = xfs_root / "ssh-gateway"
    data_dir.mkdir()
    srv = JJHubServer(data_dir).start()
    yield srv
    srv.stop()
    if os.environ.get("JJHUB_KEEP_LOG"):
        Path(os.environ["JJHUB_KEEP_LOG"]).write_text(srv.log_path.read_text())
    srv.cleanup_machines()


@pytest.fixture(scope="module")
def api(server: JJHubServer) -> Iterator[httpx.Client]:
    token = server.create_user("sshuser")
    with server.client(token) as client:
        assert client.post("/api/user/repos", json={"name": "app"}).status_code == 201
        yield client


def create_workspace(api: httpx.Client, repo: str) -> dict:
    """A new workspace, in a repository of its own (one primary per repository)."""
    if repo != "app":
        assert api.post("/api/user/repos", json={"name": repo}).status_code == 201
    response = api.post(f"/api/repos/sshuser/{repo}/workspaces", json={})
    assert response.status_code == 201, response.text
    return {**response.json(), "repo": repo}


def workspace_url(workspace: dict) -> str:
    return f"/api/repos/sshuser/{workspace['repo']}/workspaces/{workspace['id']}"


@pytest.fixture(scope="module")
def workspace(api: httpx.Client) -> dict:
    return create_workspace(api, "app")


@pytest.fixture(scope="module")
def other(api: httpx.Client) -> dict:
    return create_workspace(api, "other")


def ssh_info(api: httpx.Client, workspace: dict) -> dict:
    response = api.get(f"{workspace_url(workspace)}/ssh")
    assert response.status_code == 200, response.text
    return response.json()


def ssh_argv(info: dict, *extra: str) -> list[str]:
    """The API's `command`, with options that keep tests off ~/.ssh."""
    argv = shlex.split(info["command"])
    assert argv[0] == "ssh"
    return ["ssh", *OPTIONS, *extra, *argv[1:]]


def destination(info: dict) -> tuple[str, str]:
    """(port, user@host) from the API's `command`."""
    argv = shlex.split(info["command"])
    return argv[argv.index("-p") + 1], argv[-1]


def copy_argv(tool: str, info: dict) -> tuple[list[str], str]:
    """scp or sftp options and the host to name in paths.

    scp and sftp split `user:token@host:path` at the first colon, so the
    username goes in `-o User=` and paths name the host alone.
    """
    port, dest = destination(info)
    user, _, host = dest.rpartition("@")
    return [tool, *OPTIONS, "-P", port, "-o", f"User={user}"], host


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload]


def ssh(info: dict, command: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run([*ssh_argv(info, *extra), command])


def test_the_command_from_the_api_runs_echo(api, workspace):
    info = ssh_info(api, workspace)
    assert info["command"].startswith("ssh -p ")
    result = ssh(info, "echo hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"


def test_commands_run_as_the_linux_user_in_the_home_directory(api, workspace):
    result = ssh(ssh_info(api, workspace), "id -un; pwd")
    assert result.stdout.split() == ["developer", "/home/developer"]


def test_exit_status_and_stderr_come_back(api, workspace):
    result = ssh(ssh_info(api, workspace), "echo out; echo oops >&2; exit 7")
    assert result.returncode == 7
    assert result.stdout == "out\n"
    assert "oops" in result.stderr


def test_many_sessions_on_one_connection_each_report_their_exit_status(
    api, workspace, tmp_path
):
    """OpenSSH multiplexing: a client that closes right after EOF still gets it."""
    control = tmp_path / "ctl"
    master_argv = ssh_argv(
        ssh_info(api, workspace), "-M", "-S", str(control), "-N",
        "-o", "ControlPersist=no",
    )  # fmt: skip
    master = subprocess.Popen(master_argv, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if control.exists():
                break
            time.sleep(0.1)
        mux = ssh_argv(ssh_info(api, workspace), "-S", str(control))
        codes = [run([*mux, f"echo {n}; exit {n % 4}"]).returncode for n in range(24)]
        assert codes == [n % 4 for n in range(24)]
    finally:
        master.terminate()
        master.wait(timeout=10)


def test_stdin_reaches_the_command_and_eof_ends_it(api, workspace):
    argv = [*ssh_argv(ssh_info(api, workspace)), "wc -c"]
    result = run(argv, input="x" * 100_000)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "100000"


def test_a_pty_carries_the_terminal_type_and_size(api, workspace):
    argv = [*ssh_argv(ssh_info(api, workspace), "-tt"), "tty; echo $TERM; stty size"]
    result = run(argv, env={**os.environ, "TERM": "xterm-256color"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "xterm-256color"


def test_scp_of_50_mb_both_ways_is_byte_identical(api, workspace, tmp_path):
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(50 * 1024 * 1024))
    scp, host = copy_argv("scp", ssh_info(api, workspace))
    up = run([*scp, str(source), f"{host}:big.bin"])
    assert up.returncode == 0, up.stderr
    remote = ssh(ssh_info(api, workspace), "sha256sum big.bin")
    assert remote.stdout.split()[0] == hashlib.sha256(source.read_bytes()).hexdigest()

    back = tmp_path / "down.bin"
    scp, host = copy_argv("scp", ssh_info(api, workspace))
    down = run([*scp, "-O", f"{host}:big.bin", str(back)])  # legacy scp: exec path
    assert down.returncode == 0, down.stderr
    assert back.read_bytes() == source.read_bytes()


def test_sftp_lists_the_home_directory(api, workspace):
    ssh(ssh_info(api, workspace), "touch listed-by-sftp")
    sftp, host = copy_argv("sftp", ssh_info(api, workspace))
    result = run([*sftp, "-b", "-", host], input="ls -a\n")
    assert result.returncode == 0, result.stderr
    assert "listed-by-sftp" in result.stdout


def test_a_web_server_inside_answers_through_a_local_forward(api, workspace):
    inside = 8123
    started = ssh(
        ssh_info(api, workspace),
        "mkdir -p www && echo forwarded > www/index.html; "
        f"(cd www && exec python3 -m http.server {inside} --bind 127.0.0.1) "
        ">/dev/null 2>&1 </dev/null &",
    )
    assert started.returncode == 0, started.stderr
    local = free_port()
    argv = ssh_argv(
        ssh_info(api, workspace),
        "-N",
        "-o", "ExitOnForwardFailure=yes",
        "-L", f"127.0.0.1:{local}:127.0.0.1:{inside}",
    )  # fmt: skip
    tunnel = subprocess.Popen(argv, stderr=subprocess.PIPE)
    try:
        body = None
        for _ in range(100):
            try:
                body = httpx.get(f"http://127.0.0.1:{local}/", timeout=5).text
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert body == "forwarded\n"
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_remote_forward_reaches_the_client_side(api, workspace):
    host_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=host_server.serve_forever, daemon=True).start()
    try:
        host_port = host_server.server_address[1]
        fetch = (
            'python3 -c "import urllib.request;'
            "print(urllib.request.urlopen('http://127.0.0.1:9124/').read().decode())\""
        )
        result = ssh(
            ssh_info(api, workspace),
            fetch,
            "-o", "ExitOnForwardFailure=yes",
            "-R", f"127.0.0.1:9124:127.0.0.1:{host_port}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "from the host"
    finally:
        host_server.shutdown()


def test_twenty_parallel_sessions_all_succeed(api, workspace):
    infos = [ssh_info(api, workspace) for _ in range(20)]
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: ssh(i[1], f"echo n{i[0]}"), enumerate(infos)))
    for n, result in enumerate(results):
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"n{n}\n"


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def test_a_stuck_client_neither_blocks_others_nor_grows_the_gateway(
    server, api, workspace
):
    """A client that stops reading is held back by SSH flow control."""
    port, _ = destination(ssh_info(api, workspace))
    silent = socket.create_connection(("127.0.0.1", int(port)))
    flood = subprocess.Popen(
        [*ssh_argv(ssh_info(api, workspace)), "cat /dev/zero"],
        stdout=subprocess.PIPE,  # never read: the client's socket fills up
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)
        before = _rss_kib(server.process.pid)
        time.sleep(3)
        # Unbounded buffering would hold hundreds of MiB by now.
        assert _rss_kib(server.process.pid) - before < 32 * 1024
        results = [ssh(ssh_info(api, workspace), f"echo alive{n}") for n in range(3)]
        assert [r.stdout for r in results] == [f"alive{n}\n" for n in range(3)]
        assert flood.poll() is None
    finally:
        flood.kill()
        flood.wait()
        silent.close()


def test_finished_connections_leave_no_fds_processes_or_memory_behind(
    server, api, workspace
):
    pid = server.process.pid
    infos = [ssh_info(api, workspace) for _ in range(110)]

    def burst(batch: list[dict]) -> None:
        with ThreadPoolExecutor(10) as pool:
            results = list(pool.map(lambda info: ssh(info, "true"), batch))
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]

    burst(infos[:10])  # warm up: imports, caches, the pool of threads
    time.sleep(1)
    fds, rss = len(os.listdir(f"/proc/{pid}/fd")), _rss_kib(pid)
    children = len(_children(pid))
    for start in range(10, 110, 20):
        burst(infos[start : start + 20])
    time.sleep(1)
    assert len(os.listdir(f"/proc/{pid}/fd")) <= fds + 2
    assert len(_children(pid)) <= children
    # 100 connections; a leak of each one's state would show as megabytes.
    assert _rss_kib(pid) - rss < 16 * 1024


async def _asyncssh_run(info: dict, **auth: object) -> str:
    port, dest = destination(info)
    user, _, host = dest.rpartition("@")
    async with asyncssh.connect(
        host,
        int(port),
        username=user.partition(":")[0],
        known_hosts=None,
        client_keys=None,
        agent_path=None,
        config=None,
        **auth,  # type: ignore[arg-type]
    ) as conn:
        result = await conn.run("echo via-$0", check=True)
        return str(result.stdout)


def test_the_token_works_as_a_password(api, workspace):
    info = ssh_info(api, workspace)
    out = asyncio.run(
        _asyncssh_run(info, password=info["access_token"], preferred_auth="password")
    )
    assert out.startswith("via-")


class _Answers(asyncssh.SSHClient):
    def __init__(self, token: str) -> None:
        self.token = token
        self.prompts: list[str] = []

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(self, name, instructions, lang, prompts):  # type: ignore[no-untyped-def]
        self.prompts += [prompt for prompt, _ in prompts]
        return [self.token for _ in prompts]


def test_the_token_works_as_a_keyboard_interactive_answer(api, workspace):
    info = ssh_info(api, workspace)
    client = _Answers(info["access_token"])
    out = asyncio.run(
        _asyncssh_run(
            info,
            client_factory=lambda: client,
            preferred_auth="keyboard-interactive",
        )
    )
    assert out.startswith("via-")
    assert client.prompts == ["Password (workspace access token): "]


async def _asyncssh_signal(info: dict) -> tuple[object, object]:
    port, dest = destination(info)
    user, _, host = dest.rpartition("@")
    async with asyncssh.connect(
        host, int(port), username=user, known_hosts=None, client_keys=None,
        agent_path=None, config=None,
    ) as conn:  # fmt: skip
        killed = await conn.run("kill -TERM $$")
        env = await conn.run("echo $LC_JJHUB", env={"LC_JJHUB": "relayed"})
        return killed.exit_signal, env.stdout


def test_exit_signals_and_environment_are_relayed(api, workspace):
    exit_signal, env_out = asyncio.run(_asyncssh_signal(ssh_info(api, workspace)))
    assert exit_signal is not None and exit_signal[0] == "TERM"
    assert env_out == "relayed\n"


def test_keepalives_are_answered(api, workspace):
    result = ssh(
        ssh_info(api, workspace),
        "sleep 3; echo alive",
        "-o", "ServerAliveInterval=1",
        "-o", "ServerAliveCountMax=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "alive\n"


def test_a_wrong_password_is_refused(api, workspace):
    info = ssh_info(api, workspace)
    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(_asyncssh_run(info, password="ws_" + "0" * 48))


def test_a_suspended_workspace_wakes_on_connect(api):
    ws = create_workspace(api, "sleepy")
    base = workspace_url(ws)
    assert api.post(f"{base}/suspend").json()["status"] == "suspended"
    result = ssh(ssh_info(api, ws), "echo awake")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "awake\n"
    assert api.get(base).json()["status"] == "running"


def test_typing_into_a_session_left_open_across_a_suspend_wakes_the_workspace(
    server, api
):
    ws = create_workspace(api, "dozing")
    base = workspace_url(ws)
    session = subprocess.Popen(
        [*ssh_argv(ssh_info(api, ws)), "echo ready; read line; echo got-$line"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert session.stdout is not None and session.stdin is not None
        assert session.stdout.readline() == "ready\n"
        assert api.post(f"{base}/suspend").json()["status"] == "suspended"

        session.stdin.write("hello\n")
        session.stdin.flush()
        out, err = session.communicate(timeout=60)
        assert session.returncode == 0, err
        assert out == "got-hello\n"
    finally:
        session.kill()
        session.wait()
    history = [
        line for line in server.log_path.read_text().splitlines() if ws["id"] in line
    ]
    assert api.get(base).json()["status"] == "running", "\n".join(history)
    woken = f"status id={ws['id']} status=running cause=ssh_wake"
    assert woken in server.log_path.read_text()


def _refusal(info: dict, username: str) -> str:
    port, dest = destination(info)
    host = dest.rpartition("@")[2]
    argv = ["ssh", *OPTIONS, "-p", port, f"{username}@{host}", "echo leaked"]
    result = run(argv)
    assert result.returncode == 255
    assert "leaked" not in result.stdout
    # OpenSSH prefixes the message with the username it tried; drop that.
    return result.stderr.replace(f"{username}@{host}: ", "").strip()


def test_bad_tokens_are_refused_with_one_answer(server, api, workspace, other):
    good = ssh_info(api, workspace)
    machine = workspace["freestyle_vm_id"]

    expired = ssh_info(api, workspace)
    digest = hashlib.sha256(expired["access_token"].encode()).hexdigest()
    with sqlite3.connect(server.data_dir / "jjhub.db") as db:
        # Expired a minute ago: refused, and not yet purged by the lifecycle loop.
        a_minute_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
        db.execute(
            "UPDATE ssh_access_tokens SET expires_at = ? WHERE token_hash = ?",
            (a_minute_ago.isoformat(sep=" "), digest),
        )

    doomed = create_workspace(api, "doomed")
    revoked = ssh_info(api, doomed)
    assert api.delete(workspace_url(doomed)).status_code == 204

    foreign = ssh_info(api, other)
    cases = {
        "expired": f"{machine}+developer:{expired['access_token']}",
        "revoked": f"{doomed['freestyle_vm_id']}+developer:{revoked['access_token']}",
        "foreign": f"{machine}+developer:{foreign['access_token']}",
        "malformed": f"{machine}+developer:not-a-token",
        "wrong user": f"{machine}+root:{good['access_token']}",
        "unknown machine": f"vm_doesnotexist+developer:{good['access_token']}",
        "no token": f"{machine}+developer",
        "not ours": "root",
    }
    answers = {case: _refusal(good, name) for case, name in cases.items()}
    assert len(set(answers.values())) == 1, answers
    assert "Permission denied" in next(iter(answers.values()))

    log = server.log_path.read_text()
    for info in (good, expired, revoked, foreign):
        assert info["access_token"] not in log
    for reason in ("token expired", "token revoked", "another workspace"):
        assert reason in log


def test_a_failed_workspace_is_refused_with_a_reason(server, api):
    ws = create_workspace(api, "broken")
    info = ssh_info(api, ws)
    with sqlite3.connect(server.data_dir / "jjhub.db") as db:
        db.execute("UPDATE workspaces SET status = 'failed' WHERE id = ?", (ws["id"],))
    result = ssh(info, "echo should-not-run")
    assert result.returncode == 255
    assert "should-not-run" not in result.stdout
    assert "failed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_connections_are_logged_without_tokens(server, api, workspace):
    info = ssh_info(api, workspace)
    assert ssh(info, "true").returncode == 0
    log = server.log_path.read_text()
    assert f"machine={workspace['freestyle_vm_id']}" in log
    assert "ssh connection opened" in log
    assert "ssh connection closed" in log
    assert info["access_token"] not in log
