"""A real Slurm cluster on this machine for the tests: munge, one ``slurmctld`` and one ``slurmd -N nodeK`` per
node, each node a localhost address on its own port (Debian's slurm-wlm 22.05; the configuration measured in
../shared/NOTES-diffusers-ltx2.md). Nothing here is used by ``launch/``: the sbatch scripts run unchanged on it.

The daemons it starts are stopped by pid; munged only if it started it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")


class Unavailable(Exception):
    """Why a cluster cannot be started here (the tests skip with this reason)."""


def ensure_packages() -> None:
    """Install slurm-wlm and munge when absent (root only)."""
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0:
        raise Unavailable("slurm-wlm is not installed and installing it needs root")
    if shutil.which("apt-get") is None:
        raise Unavailable("slurm-wlm is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True)
        proc = subprocess.run(install, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise Unavailable(f"apt-get install {' '.join(PACKAGES)} failed: {proc.stderr[-500:]}")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


class SlurmCluster:
    """``with SlurmCluster(tmp, nodes=2) as cluster: cluster.run(["sbatch", ...])``."""

    def __init__(self, root: Path, nodes: int = 2, cpus_per_node: int = 1, cred_expire: int = 10):
        self.root = Path(root)
        self.nodes = [f"node{i + 1}" for i in range(nodes)]
        self.cpus = cpus_per_node
        self.ports = _free_ports(1 + nodes)  # slurmctld, then one slurmd per node
        self.cred_expire = cred_expire  # a requeued job waits this long before it starts again (Slurm: 120 s)
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._pid_files: list[Path] = []
        self._munged: Path | None = None

    # ------------------------------------------------------------------------------------------- start/stop
    def __enter__(self) -> "SlurmCluster":
        if os.geteuid() != 0:
            raise Unavailable("the test cluster runs its daemons as root (SlurmUser=root)")
        ensure_packages()
        try:
            self._start_munge()
            self._write_conf()
            self._start_daemons()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start_munge(self) -> None:
        pid_file = Path("/run/munge/munged.pid")
        if _pid_alive(pid_file):
            return
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["/usr/sbin/mungekey", "-c"], check=True, capture_output=True)
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        subprocess.run(["munged", "--force"], check=True, capture_output=True)
        self._munged = pid_file
        check = subprocess.run("munge -n | unmunge", shell=True, capture_output=True, text=True)
        if "Success" not in check.stdout:
            raise Unavailable(f"munge does not work here: {check.stdout[-300:]} {check.stderr[-300:]}")

    def _write_conf(self) -> None:
        r = self.root
        for sub in ("state", "spool", "log"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        nodes = "\n".join(
            f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={self.ports[1 + i]} CPUs={self.cpus} "
            f"RealMemory=4000 State=UNKNOWN"
            for i, n in enumerate(self.nodes)
        )
        cred_expire = self.cred_expire
        self.conf.write_text(f"""\
ClusterName=ltx2train-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={self.ports[0]}
AuthType=auth/munge
AuthInfo=cred_expire={cred_expire}
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobRequeue=1
ReturnToService=2
MailProg=/bin/true
KillWait=30
MinJobAge=600
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.%n.log
{nodes}
PartitionName=test Nodes={",".join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
""")

    def _start_daemons(self) -> None:
        self._spawn(["slurmctld", "-f", str(self.conf)], self.root / "slurmctld.pid")
        for n in self.nodes:
            (self.root / "spool" / n).mkdir(parents=True, exist_ok=True)
            self._spawn(["slurmd", "-f", str(self.conf), "-N", n], self.root / f"slurmd.{n}.pid")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = self.run(["sinfo", "-h", "-N", "-o", "%N %t"], check=False).stdout
            if sum(1 for line in out.splitlines() if line.split()[-1:] == ["idle"]) == len(self.nodes):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the test cluster did not come up: sinfo says {out!r}; logs in {self.root / 'log'}")

    def _spawn(self, command: list[str], pid_file: Path) -> None:
        self._pid_files.append(pid_file)
        subprocess.run(command, check=True, env=self.env, capture_output=True)  # daemonises, writes its pid file
        deadline = time.monotonic() + 20
        while _pid_alive(pid_file) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start; logs in {self.root / 'log'}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the daemons this cluster started, by pid (munged too, if it started it)."""
        pid_files = list(reversed(self._pid_files)) + ([self._munged] if self._munged else [])
        for pid_file in pid_files:
            pid = _pid_alive(pid_file)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _pid_alive(pid_file) == pid and time.monotonic() < deadline:
                time.sleep(0.1)
            if _pid_alive(pid_file) == pid:
                os.kill(pid, signal.SIGKILL)
        self._pid_files, self._munged = [], None

    # ------------------------------------------------------------------------------------------- use
    def run(self, command: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run(command, env=kwargs.pop("env", self.env), capture_output=True, text=True, **kwargs)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def sbatch(self, args: list[str], env: dict | None = None) -> str:
        """Submit; the job id."""
        out = self.run(["sbatch", "--parsable", *args], env={**self.env, **(env or {})}).stdout
        return out.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...); {} once it is gone."""
        out = self.run(["scontrol", "-o", "show", "job", job_id], check=False).stdout
        return dict(re.findall(r"(\w+)=(\S*)", out))

    def wait(self, job_id: str, states: tuple[str, ...], timeout: float = 600) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} did not reach {states} in {timeout:.0f} s: {self.job(job_id)}")
