"""The same workloads for ansible-core and pyinfra, written into a work directory, and their command lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEERS = ("ansible-core==2.19.14", "pyinfra==3.10.0")
DATA = "/srv/kxbench"


def install(venv: Path) -> None:
    """The peers live in their own virtualenv (bench/.peers), never in kubexm's."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == " ".join(PEERS):
        return
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *PEERS], check=True)
    stamp.write_text(" ".join(PEERS))


def _tasks(workload: str) -> list[str]:
    if workload == "a":
        return ["    - command: 'true'"]
    if workload in ("b", "e"):
        return [f"    - shell: 'echo {i} > {DATA}/b{i}'" for i in range(10)]
    return [f"    - copy: {{content: \"{i}\\n\", dest: {DATA}/c{i}}}" for i in range(20)]


def write(work: Path, hosts: list[dict[str, str]], key: Path, persist: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    inv = ["[all]"] + [f"{h['name']} ansible_host={h['address']}" for h in hosts]
    inv += ["[all:vars]", "ansible_user=kxbench", f"ansible_ssh_private_key_file={key}",
            "ansible_python_interpreter=/usr/bin/python3"]
    (work / "inventory.ini").write_text("\n".join(inv) + "\n")
    for w in ("a", "b", "c", "e"):
        (work / f"play-{w}.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks:\n"
                                            + "\n".join(_tasks(w)) + "\n")
    (work / "ansible.cfg").write_text(
        "[defaults]\nhost_key_checking = False\nforks = 50\nstdout_callback = default\ndisplay_ok_hosts = False\n"
        "display_skipped_hosts = False\ninterpreter_python = /usr/bin/python3\n"
        "[ssh_connection]\npipelining = True\n"
        f"ssh_args = -o ControlMaster=auto -o ControlPersist={persist}s -o UserKnownHostsFile=/dev/null "
        f"-o StrictHostKeyChecking=no\ncontrol_path_dir = {work}/cp\n")
    entries = ",\n".join(f"    ({h['name']!r}, {{'ssh_hostname': {h['address']!r}}})" for h in hosts)
    (work / "inventory.py").write_text(
        f"hosts = ([\n{entries},\n], {{'ssh_user': 'kxbench', 'ssh_key': {str(key)!r}, "
        "'ssh_strict_host_key_checking': 'no', 'ssh_known_hosts_file': '/dev/null', "
        "'ssh_allow_agent': False, 'ssh_look_for_keys': False})\n")
    (work / "deploy-a.py").write_text("from pyinfra.operations import server\nserver.shell(commands=['true'])\n")
    deploy_b = "from pyinfra.operations import server\n" + "".join(
        f"server.shell(name='b{i}', commands=['echo {i} > {DATA}/b{i}'])\n" for i in range(10))
    (work / "deploy-b.py").write_text(deploy_b)
    (work / "deploy-e.py").write_text(deploy_b)
    (work / "deploy-c.py").write_text("import io\nfrom pyinfra.operations import files\n" + "".join(
        f"files.put(name='c{i}', src=io.StringIO('{i}\\n'), dest='{DATA}/c{i}')\n" for i in range(20)))


def pyinfra_config(work: Path, connect_timeout: float) -> Path:
    """A pyinfra config file with this connect timeout (whole seconds, at least 1): what the fault workloads
    give pyinfra, as KUBEXM_CONNECT_TIMEOUT gives kubexm."""
    path = work / f"config-timeout-{connect_timeout:g}.py"
    path.write_text(f"from pyinfra import config\nconfig.CONNECT_TIMEOUT = {max(1, round(connect_timeout))}\n")
    return path


def command(tool: str, workload: str, work: Path, venv: Path, hosts: int) -> list[str]:
    if tool == "ansible":
        argv = [str(venv / "bin" / "ansible-playbook"), "-i", str(work / "inventory.ini"), "-f", str(max(50, hosts)),
                str(work / f"play-{'b' if workload == 'e' else workload}.yml")]
        return argv + (["--check"] if workload == "e" else [])
    argv = [str(venv / "bin" / "pyinfra"), str(work / "inventory.py"), str(work / f"deploy-{workload}.py"), "-y",
            "--parallel", str(max(50, hosts))]
    return argv + (["--dry"] if workload == "e" else [])
