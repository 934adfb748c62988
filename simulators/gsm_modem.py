"""A simulated GSM modem on a pty: enough of the AT command set (27.007/27.005 text mode) for the
bridge's driver, SIM storage of incoming SMS with ``+CMTI`` indications, and a record of sent SMS.

Faults for tests: :meth:`SimulatedModem.fail_next` (answer a command with ``ERROR`` or
``+CMS ERROR: n``), :attr:`SimulatedModem.silent` (stop answering), :meth:`SimulatedModem.reset`
(lose all settings and print ``RDY``, as after a power glitch; stored SMS survive, as on a SIM).

Run ``python -m simulators.gsm_modem --link /tmp/telecare-modem`` for a demo modem; type
``+447700900123 ALARM PENDANT`` on stdin to deliver an SMS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from devices.cancellation import stop
from devices.gsm_at import decode_ucs2, encode_ucs2
from simulators.serial_unit import PtyPort


@dataclass
class StoredSms:
    sender: str
    text: str
    scts: str
    status: str = "REC UNREAD"


def format_scts(ts: datetime) -> str:
    quarters = int((ts.utcoffset() or timedelta()).total_seconds() // 900)
    sign = "+" if quarters >= 0 else "-"
    return ts.strftime("%y/%m/%d,%H:%M:%S") + f"{sign}{abs(quarters):02d}"


class SimulatedModem:
    """An async context manager owning a pty and the task that answers AT commands."""

    def __init__(self, *, link: str | None = None, capacity: int = 30) -> None:
        self.port = PtyPort(link=link)
        self.path = ""
        self.capacity = capacity
        self.storage: dict[int, StoredSms] = {}
        self.sent: list[tuple[str, str]] = []
        self.commands: list[str] = []
        self.deleted: list[int] = []
        self.silent = False
        self.ucs2_supported = True
        self.rssi = 21
        self.reg_stat = 1
        self._faults: list[tuple[str, str]] = []
        self._mr = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._settings()

    def _settings(self) -> None:
        self.echo = True
        self.cmgf = 0
        self.charset = "IRA"
        self.csdh = 0
        self.cnmi_mt = 0
        self.creg_n = 0
        self._in_text: str | None = None  # destination number while taking AT+CMGS text

    async def __aenter__(self) -> Self:
        self.path = self.port.open()
        self._task = asyncio.create_task(self._serve(), name="sim-modem")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.port.close()
        await stop(self._task)

    def unplug(self) -> None:
        """The modem's USB lead is pulled: the bridge's port fails."""
        self.port.close()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def plug(self) -> None:
        """Plugged back in (a fresh power-up: settings lost, SIM storage kept)."""
        self._settings()
        self.path = self.port.open()
        self._task = asyncio.create_task(self._serve(), name="sim-modem")

    # --- the world side -----------------------------------------------------------------------

    async def deliver(self, sender: str, text: str, *, ts: datetime | None = None) -> int:
        """An SMS arrives: store it and indicate it with +CMTI (when the driver asked for that)."""
        index = next(i for i in itertools.count(1) if i not in self.storage)
        if index > self.capacity:
            raise RuntimeError("SIM storage full")
        self.storage[index] = StoredSms(sender, text, format_scts(ts or datetime.now(UTC)))
        if self.cnmi_mt and not self.silent:
            await self._send(f'\r\n+CMTI: "SM",{index}\r\n')
        return index

    def fail_next(self, prefix: str, answer: str = "ERROR", times: int = 1) -> None:
        """Answer the next ``times`` commands starting with ``prefix`` with ``answer``."""
        self._faults.extend([(prefix.upper(), answer)] * times)

    async def reset(self) -> None:
        """Lose every setting and announce the restart, as a modem does after a brown-out."""
        self._settings()
        await self._send("\r\nRDY\r\n\r\n+CPIN: READY\r\n\r\nSMS Ready\r\n")

    # --- the AT side ---------------------------------------------------------------------------

    async def _send(self, text: str) -> None:
        await self.port.write(text.encode("utf-8"))

    def _str_in(self, value: str) -> str:
        if self.charset == "UCS2":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                return decode_ucs2(value)
        return value

    def _str_out(self, value: str) -> str:
        return encode_ucs2(value) if self.charset == "UCS2" else value

    async def _serve(self) -> None:
        buf = b""
        while True:
            data = await self.port.read()
            if not data:
                return
            buf += data
            while True:
                if self._in_text is not None:
                    end = re.search(rb"[\x1a\x1b]", buf)
                    if end is None:
                        break
                    text, key, buf = buf[: end.start()], buf[end.start() : end.start() + 1], buf[end.end() :]
                    await self._finish_cmgs(text.decode("utf-8", "replace"), send=key == b"\x1a")
                    continue
                buf = buf.replace(b"\x1b", b"")  # like a real modem: ESC outside text entry is nothing
                m = re.search(rb"[\r\n]", buf)
                if m is None:
                    break
                line, buf = buf[: m.start()].decode("utf-8", "replace"), buf[m.end() :]
                if not line.strip():
                    continue
                if self.silent:
                    continue
                if self.echo:
                    await self._send(line + "\r")
                self.commands.append(line)
                await self._command(line.strip())

    async def _ok(self, *info: str) -> None:
        body = "".join(f"\r\n{line}" for line in info)
        await self._send(body + ("\r\n" if info else "") + "\r\nOK\r\n")

    async def _command(self, line: str) -> None:
        upper = line.upper()
        for i, (prefix, answer) in enumerate(self._faults):
            if upper.startswith(prefix):
                del self._faults[i]
                await self._send(f"\r\n{answer}\r\n")
                return
        if not upper.startswith("AT"):
            await self._send("\r\nERROR\r\n")
            return
        cmd = line[2:]
        ucmd = cmd.upper()
        if ucmd in ("", "Z", "&F"):
            if ucmd:
                self._settings()
            await self._ok()
        elif ucmd in ("E0", "E1"):
            self.echo = ucmd == "E1"
            await self._ok()
        elif m := re.fullmatch(r"\+CMEE=\d", ucmd):
            await self._ok()
        elif m := re.fullmatch(r"\+CMGF=([01])", ucmd):
            self.cmgf = int(m.group(1))
            await self._ok()
        elif m := re.fullmatch(r'\+CSCS="(\w+)"', ucmd):
            if m.group(1) in ("IRA", "GSM") or (m.group(1) == "UCS2" and self.ucs2_supported):
                self.charset = m.group(1)
                await self._ok()
            else:
                await self._send("\r\n+CME ERROR: 4\r\n")
        elif m := re.fullmatch(r"\+CSDH=([01])", ucmd):
            self.csdh = int(m.group(1))
            await self._ok()
        elif ucmd.startswith("+CPMS="):
            used = len(self.storage)
            await self._ok(f"+CPMS: {used},{self.capacity},{used},{self.capacity},{used},{self.capacity}")
        elif m := re.fullmatch(r"\+CNMI=\d,(\d)(?:,\d)*", ucmd):
            self.cnmi_mt = int(m.group(1))
            await self._ok()
        elif m := re.fullmatch(r"\+CREG=([012])", ucmd):
            self.creg_n = int(m.group(1))
            await self._ok()
        elif ucmd == "+CREG?":
            await self._ok(f"+CREG: {self.creg_n},{self.reg_stat}")
        elif ucmd == "+CSQ":
            await self._ok(f"+CSQ: {self.rssi},99")
        elif m := re.fullmatch(r"\+CMGR=(\d+)", ucmd):
            await self._cmgr(int(m.group(1)))
        elif m := re.fullmatch(r'\+CMGL(?:="([^"]*)")?', cmd, re.IGNORECASE):
            await self._cmgl(self._str_in(m.group(1) or "REC UNREAD").upper())
        elif m := re.fullmatch(r"\+CMGD=(\d+)(?:,(\d))?", ucmd):
            index, flag = int(m.group(1)), int(m.group(2) or 0)
            if flag == 4:
                self.storage.clear()
            elif self.storage.pop(index, None) is not None:
                self.deleted.append(index)
            await self._ok()
        elif m := re.fullmatch(r'\+CMGS="([^"]+)"', cmd, re.IGNORECASE):
            if self.cmgf != 1:
                await self._send("\r\n+CMS ERROR: 304\r\n")
                return
            self._in_text = self._str_in(m.group(1))
            await self._send("\r\n> ")
        else:
            await self._send("\r\nERROR\r\n")

    def _body(self, sms: StoredSms) -> tuple[str, int]:
        ascii_only = sms.text.isascii()
        if self.charset == "UCS2":
            return encode_ucs2(sms.text), 0 if ascii_only else 8
        if ascii_only:
            return sms.text, 0
        return encode_ucs2(sms.text), 8  # a UCS2 message in a non-UCS2 charset arrives as hex

    async def _cmgr(self, index: int) -> None:
        if self.cmgf != 1:
            await self._send("\r\n+CMS ERROR: 302\r\n")
            return
        sms = self.storage.get(index)
        if sms is None:
            await self._send("\r\n+CMS ERROR: 321\r\n")
            return
        body, dcs = self._body(sms)
        header = f'+CMGR: "{sms.status}","{self._str_out(sms.sender)}",,"{sms.scts}"'
        if self.csdh:
            header += f',145,4,0,{dcs},"{self._str_out("+447785016005")}",145,{len(sms.text)}'
        sms.status = "REC READ"
        await self._send(f"\r\n{header}\r\n{body}\r\n\r\nOK\r\n")

    async def _cmgl(self, status: str) -> None:
        if self.cmgf != 1:
            await self._send("\r\n+CMS ERROR: 302\r\n")
            return
        if status not in ("ALL", "REC UNREAD", "REC READ"):
            await self._send("\r\n+CMS ERROR: 305\r\n")
            return
        out = ""
        for index in sorted(self.storage):
            sms = self.storage[index]
            if status != "ALL" and sms.status != status:
                continue
            body, _ = self._body(sms)
            header = f'+CMGL: {index},"{sms.status}","{self._str_out(sms.sender)}",,"{sms.scts}"'
            if self.csdh:
                header += f",145,{len(sms.text)}"
            out += f"\r\n{header}\r\n{body}"
            sms.status = "REC READ"
        await self._send(out + ("\r\n" if out else "") + "\r\nOK\r\n")

    async def _finish_cmgs(self, text: str, *, send: bool) -> None:
        number, self._in_text = self._in_text or "", None
        if not send:
            await self._ok()
            return
        self.sent.append((number, self._str_in(text)))
        await self._ok(f"+CMGS: {next(self._mr)}")


async def _demo(args: argparse.Namespace) -> None:
    async with SimulatedModem(link=args.link) as modem:
        print(f"modem on {modem.path}; type '<number> <text>' to deliver an SMS", flush=True)
        loop = asyncio.get_running_loop()
        while True:
            line: Any = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                await asyncio.Event().wait()
            number, _, text = line.strip().partition(" ")
            if number:
                print("stored at", await modem.deliver(number, text), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="simulated GSM modem on a pty")
    parser.add_argument("--link", help="stable symlink to the pty (what the bridge opens)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_demo(parser.parse_args()))


if __name__ == "__main__":
    main()
