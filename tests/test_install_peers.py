"""
Tests for C{.ci/install-peers}, run against fake C{dpkg-query}, C{dpkg} and C{apt-get} on
C{PATH}, in a copy of the script in a temporary directory: they never change the system's
packages (other tests run against them at the same time).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "install-peers"
PACKAGES = (
    "socat netcat-openbsd curl tftp-hpa atftp libwrap0 nftables iproute2 systemd openbsd-inetd"
    " iptux xvfb dnsmasq-base ipxe-qemu qemu-system-x86 nginx-light tcpdump"
)

FAKES = {
    # The state of each package comes from $STATE/NAME ("install ok installed" if absent).
    "dpkg-query": """
        pkg="${@: -1}"
        if [ -f "$STATE/$pkg" ]; then cat "$STATE/$pkg"; else printf 'install ok installed'; fi
    """,
    # dpkg -s answers 0 for every package, as the real one does for removed-but-configured;
    # dpkg -x DEB DIR unpacks a server that says what it is ($WRONG: in.tftpd is atftpd's).
    "dpkg": """
        echo "dpkg $*" >> "$LOG"
        [ "$1" = -s ] && exit 0
        deb=$(basename "$2"); dir=$3
        mkdir -p "$dir/usr/sbin"
        case $deb in
          tftpd-hpa_*) say='tftp-hpa 5.2, with remap, with tcpwrappers'; exe=in.tftpd
                       [ -n "${WRONG:-}" ] && say="in.tftpd: unrecognized option '-V'" ;;
          atftpd_*) say='atftp-0.8.0 (server)'; exe=atftpd ;;
        esac
        printf '#!/bin/sh\\necho "%s"\\n' "$say" > "$dir/usr/sbin/$exe"
        chmod +x "$dir/usr/sbin/$exe"
    """,
    # apt-get install records the policy-rc.d it sees, then "installs" (fixes the state).
    "apt-get": """
        echo "apt-get $*" >> "$LOG"
        case $1 in
          download) touch "${@: -1}_1_amd64.deb" ;;
          install)
            [ -x "$POLICY_RC_D" ] && { "$POLICY_RC_D" inetd start || echo "policy $?" >> "$LOG"; }
            for p in "$@"; do rm -f "$STATE/$p"; done ;;
        esac
    """,
}


@pytest.fixture
def fake(tmp_path: Path) -> dict[str, Path]:
    if os.geteuid() != 0:
        pytest.skip("install-peers installs as root (it only reports without it)")
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / ".ci" / "install-peers")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, body in FAKES.items():
        (bin_ / name).write_text("#!/bin/bash\nset -eu\n" + body)
        (bin_ / name).chmod(0o755)
    (tmp_path / "state").mkdir()
    return {"repo": repo, "bin": bin_, "state": tmp_path / "state", "log": tmp_path / "log",
            "policy": tmp_path / "policy-rc.d"}  # fmt: skip


def run(fake: dict[str, Path], **env: str) -> tuple[int, str, list[str]]:
    environment = dict(os.environ, PATH=f"{fake['bin']}:{os.environ['PATH']}",
                       STATE=str(fake["state"]), LOG=str(fake["log"]),
                       POLICY_RC_D=str(fake["policy"]), **env)  # fmt: skip
    environment.pop("CI", None)
    done = subprocess.run(["bash", str(fake["repo"] / ".ci" / "install-peers")],
                          env=environment, capture_output=True, text=True, timeout=60)  # fmt: skip
    log = fake["log"].read_text().splitlines() if fake["log"].exists() else []
    fake["log"].unlink(missing_ok=True)
    return done.returncode, done.stderr, log


def server(fake: dict[str, Path], package: str, program: str) -> str:
    path = fake["repo"] / ".peers" / package / "usr" / "sbin" / program
    return subprocess.run([str(path)], capture_output=True, text=True).stdout.strip()


def test_removedButConfiguredIsInstalled(fake: dict[str, Path]) -> None:
    """
    A package removed with its configuration kept (dpkg -s still answers 0) is installed
    again, with a policy-rc.d that forbids starting daemons, removed afterwards.
    """
    run(fake)
    (fake["state"] / "socat").write_text("deinstall ok config-files")
    (fake["state"] / "systemd").write_text("unknown ok not-installed")
    code, err, log = run(fake)
    assert code == 0, err
    installs = [line for line in log if line.startswith("apt-get install")]
    assert installs == ["apt-get install -y -qq --no-install-recommends socat systemd"]
    assert "policy 101" in log
    assert not fake["policy"].exists()


def test_privateServersCheckedAndReplaced(fake: dict[str, Path]) -> None:
    """
    Both TFTP servers are unpacked into .peers/; a copy that is not the right program (an
    atftpd where in.tftpd should be) is unpacked again; good copies are left alone.
    """
    code, err, log = run(fake)
    assert code == 0, err
    assert [line for line in log if line.startswith("apt-get download")] == [
        "apt-get download -qq tftpd-hpa",
        "apt-get download -qq atftpd",
    ]
    assert server(fake, "tftpd-hpa", "in.tftpd").startswith("tftp-hpa 5.2")
    assert server(fake, "atftpd", "atftpd") == "atftp-0.8.0 (server)"
    wrong = fake["repo"] / ".peers" / "tftpd-hpa" / "usr" / "sbin" / "in.tftpd"
    wrong.write_text("#!/bin/sh\necho \"atftpd: unrecognized option '--foreground'\"\n")
    code, err, log = run(fake)
    assert code == 0, err
    assert [line for line in log if line.startswith("apt-get download")] == [
        "apt-get download -qq tftpd-hpa"
    ]
    assert server(fake, "tftpd-hpa", "in.tftpd").startswith("tftp-hpa 5.2")
    assert run(fake) == (0, "", [])  # all good: nothing to do, apt-get not even updated


def test_brokenPackageFailsLoudly(fake: dict[str, Path]) -> None:
    """A downloaded package without the right server is an error, not a silent bad peer."""
    code, err, _ = run(fake, WRONG="1")
    assert code == 1
    assert "the tftpd-hpa package holds no working tftpd-hpa server" in err
    assert not (fake["repo"] / ".peers" / "tftpd-hpa").exists()


def test_existingPolicyKept(fake: dict[str, Path]) -> None:
    """A policy-rc.d already there (container images ship one) stays after the install."""
    fake["policy"].write_text("#!/bin/sh\nexit 101\n")
    fake["policy"].chmod(0o755)
    (fake["state"] / "curl").write_text("deinstall ok config-files")
    code, err, log = run(fake)
    assert code == 0, err
    assert "policy 101" in log and fake["policy"].exists()


def test_packageListHasTheSystemPeers() -> None:
    """systemd (socket activation, systemd-analyze) and openbsd-inetd are installed too."""
    assert f'packages="{PACKAGES}"' in SCRIPT.read_text()


def test_interopServersNeverFromThePath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    The interop tests' in.tftpd is the checked private copy, whatever C{in.tftpd} the
    system has (atftpd's, when atftpd is installed): a wrong one on PATH is never used.
    """
    from tests.tftp import peers

    impostor = tmp_path / "usr" / "sbin" / "in.tftpd"
    impostor.parent.mkdir(parents=True)
    impostor.write_text("#!/bin/sh\necho \"atftpd: unrecognized option '--foreground'\"\n")
    impostor.chmod(0o755)
    monkeypatch.setenv("PATH", f"{impostor.parent}:{os.environ['PATH']}")
    assert not peers.isPeer(tmp_path, "tftpd-hpa")
    path = peers.inTftpd()
    assert Path(path) != impostor and not path.startswith("/usr/sbin")
    assert peers.isPeer(Path(path).parents[2], "tftpd-hpa")
