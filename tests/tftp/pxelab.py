"""
A network-boot lab for the PXE tests: a network namespace of the test's own (named with the
process id and the tag C{pxe}) holding a bridge, DHCP from dnsmasq (DHCP only: its TFTP is
off) naming our server as the boot server, our C{twistd udpsuite tftp}, and a real firmware
client: iPXE from Debian's C{ipxe-qemu}, the option ROM of a virtio NIC in
C{qemu-system-x86_64} (TCG: no KVM needed) on a tap device enslaved to the bridge.

SeaBIOS is told to copy its console to the serial port (C{etc/sercon-port}), so everything
SeaBIOS and iPXE print, iPXE scripts' C{echo} included, arrives on QEMU's standard output.

The addresses are private ones inside the namespace: nothing of the lab is seen outside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import requirePeer
from tests.process import BackgroundProcess, runProcess, venvScript
from tests.tftp.lossnet import namespace

SERVER = "10.77.0.1"
"""The bridge's address: our TFTP server and dnsmasq listen there."""
CLIENT_MAC = "52:54:00:75:64:70"
IPXE_ROM = Path("/usr/lib/ipxe/qemu/efi-virtio.rom")
"""iPXE as Debian's ipxe-qemu builds it for QEMU's virtio NIC (BIOS and UEFI images in one):
QEMU's own default ROM for the NIC, found on its firmware path. (Naming it with C{romfile=}
leaves SeaBIOS without a network boot entry in QEMU 7.2, so the test checks the banner.)"""
IPXE_BANNER = b"iPXE 1.0.0+git-20190125"
"""What the ROM prints on the console: Debian's ipxe-qemu 1.0.0+git-20190125.36a4c85."""


def _requireFile(path: Path) -> Path:
    if not path.exists():
        message = f"{path} is missing (bash .ci/install-peers installs ipxe-qemu)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Lab:
    """A running lab: C{prefix} runs a program in its namespace; C{server} is our twistd."""

    prefix: list[str]
    dhcp: BackgroundProcess
    server: BackgroundProcess
    tmp: Path

    def events(self) -> list[dict[str, Any]]:
        """The server's log events so far (its log is JSON lines)."""
        return [json.loads(line) for line in self.server.output.splitlines() if line[:1] == b"{"]

    def transfers(self) -> list[dict[str, Any]]:
        """The server's transfer-end events so far."""
        return [event for event in self.events() if event.get("tftpTransfer")]

    def describe(self, client: BackgroundProcess) -> str:
        """What the client's console, DHCP and the server said, for a failure's message."""
        return (
            f"console: {client.output[-3000:]!r}\ndnsmasq: {self.dhcp.output[-2000:]!r}\n"
            f"server: {[event.get('text') for event in self.events()]}"
        )

    def boot(self, reactor: Any) -> BackgroundProcess:
        """Power on the client: it PXE-boots at once; its serial console is its output."""
        qemu = requirePeer("qemu-system-x86_64")
        _requireFile(IPXE_ROM)
        sercon = self.tmp / "sercon-port"
        sercon.write_bytes((0x3F8).to_bytes(2, "little"))
        argv = [
            *self.prefix,
            qemu,
            "-machine",
            "pc,accel=tcg",
            "-m",
            "96",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-fw_cfg",
            f"name=etc/sercon-port,file={sercon}",
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device",
            f"virtio-net-pci,netdev=n0,mac={CLIENT_MAC}",
            "-boot",
            "n",
        ]
        return BackgroundProcess(reactor, argv)


async def _run(reactor: Any, argv: list[str]) -> None:
    out, err, code = await runProcess(reactor, argv)
    assert code == 0, (argv, err)


@asynccontextmanager
async def pxeLab(
    reactor: Any, tmp: Path, root: Path, bootFile: str, *serverOptions: str
) -> AsyncIterator[Lab]:
    """
    Start the lab serving C{root}, with DHCP naming C{bootFile}; stop and delete it all
    afterwards.
    """
    ip = requirePeer("ip")
    dnsmasq = requirePeer("dnsmasq")
    _requireFile(Path("/dev/net/tun"))
    async with namespace(reactor, tag="pxe") as prefix, AsyncExitStack() as stack:
        for command in (
            "link add br0 type bridge forward_delay 0 stp_state 0",
            f"addr add {SERVER}/24 dev br0",
            "link set br0 up",
            "tuntap add dev tap0 mode tap",
            "link set tap0 master br0 up",
        ):
            await _run(reactor, [*prefix, ip, *command.split()])
        dhcp = BackgroundProcess(
            reactor,
            [
                *prefix,
                dnsmasq,
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",  # no DNS
                "--interface=br0",
                "--bind-interfaces",
                "--user=root",
                "--pid-file=",
                f"--dhcp-leasefile={tmp / 'leases'}",
                "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,1h",
                f"--dhcp-boot={bootFile},,{SERVER}",
                "--log-facility=-",
            ],
        )
        stack.push_async_callback(dhcp.stop)
        await dhcp.waitFor(b"DHCP, sockets bound exclusively to interface br0")
        server = BackgroundProcess(
            reactor,
            [
                *prefix,
                venvScript("twistd"),
                "-n",
                "--pidfile=",
                "--logger",
                "twisted_udpsuite.logs.jsonLogger",
                "udpsuite",
                "tftp",
                "--port",
                "69",
                "--interface",
                "0.0.0.0",
                "--root",
                str(root),
                *serverOptions,
            ],
        )
        stack.push_async_callback(server.stop)
        await server.waitFor(b"tftp listening")
        yield Lab(prefix, dhcp, server, tmp)
