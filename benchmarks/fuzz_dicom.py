"""Fuzz the DICOM reading path: ``read_file`` on mutated real DICOM files (pydicom's test files).

    nice -n 10 python benchmarks/fuzz_dicom.py --seconds 600 [--crashes DIR] [--engine atheris]

A finding is an input that makes ``read_file``
- raise anything other than ReadError or SkipFile (kind ``exception``),
- give a reason that is empty, not one line or "unreadable" (the input always is readable), or a
  result that breaks its contract (``contract``),
- take more than ``--timeout`` seconds of CPU, or 10 times that in all (``hang``),
- grow the reader by more than ``--rss-mb`` MiB while reading it, or end in "out of memory"
  (``memory``): an absurd declared size must be refused before anything is allocated,
- kill the process (``crash``: a segfault in a decoder).
Each distinct finding's input is saved to ``--crashes`` (outside the repository by default) with a
``.txt`` beside it saying what happened; the summary counts inputs tried and findings by kind.

Mutations are structure-aware (bit flips, truncations, element length fields, tags, VRs, transfer
syntaxes, huge Rows/Columns/NumberOfFrames/BitsAllocated) and, with atheris, mixed with libFuzzer's
own byte mutations under coverage guidance of pydicom and radsearch. Without atheris
(``pip install -e ".[fuzz]"``) the same mutations are drawn at random (``--engine random``).

The reader runs in a child process that a supervisor watches from outside: a decoder stuck in C
code or an allocation that runs away cannot stop the watch. The child writes each input to a file
before reading it, so the supervisor can keep the input that hung or blew up, kill the child and
start another for the time that is left.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

SEED_MAX_BYTES = 64 * 1024
MAX_INPUT_BYTES = 96 * 1024
IMAGE_SIZE = 64  # resizing cost is not what is fuzzed
# Inputs done, and when the current input started (0: idle): monotonic ns, the reader's CPU time
# (ns) and its RSS (kB).
_HEARTBEAT = struct.Struct("<QQQQ")
_POLL_SECONDS = 0.05
_STATS_EVERY_SECONDS = 1.0

# --- mutations ------------------------------------------------------------------------------------

_VRS = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
    b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
    b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
]
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"UV"}
# Elements whose values steer how much the reader allocates or how it decodes.
_STEERING_TAGS = [
    (0x0002, 0x0010),  # Transfer Syntax UID
    (0x0008, 0x0016),  # SOP Class UID
    (0x0028, 0x0002),  # Samples per Pixel
    (0x0028, 0x0004),  # Photometric Interpretation
    (0x0028, 0x0006),  # Planar Configuration
    (0x0028, 0x0008),  # Number of Frames
    (0x0028, 0x0010),  # Rows
    (0x0028, 0x0011),  # Columns
    (0x0028, 0x0100),  # Bits Allocated
    (0x0028, 0x0101),  # Bits Stored
    (0x0028, 0x0102),  # High Bit
    (0x0028, 0x0103),  # Pixel Representation
    (0x0028, 0x1050),  # Window Center
    (0x0028, 0x1051),  # Window Width
    (0x0028, 0x1052),  # Rescale Intercept
    (0x0028, 0x1053),  # Rescale Slope
    (0x0028, 0x3002),  # LUT Descriptor
    (0x0028, 0x3010),  # VOI LUT Sequence
    (0x0028, 0x1101),  # Red Palette Color LUT Descriptor
    (0x5200, 0x9230),  # Per-frame Functional Groups Sequence
    (0x7FE0, 0x0010),  # Pixel Data
    (0xFFFE, 0xE000),  # Item
    (0xFFFE, 0xE00D),  # Item Delimitation
    (0xFFFE, 0xE0DD),  # Sequence Delimitation
]
_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.100", "1.2.3",
]
_US_VALUES = [0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 24, 32, 33, 64, 255, 256, 0x3FFF, 0x4000, 0x7FFF,
              0x8000, 0xFFFE, 0xFFFF]
_IS_VALUES = [b"0", b"1", b"2", b"-1", b"3", b"1000", b"65535", b"99999999", b"2147483648",
              b"1e9", b"abc", b""]
_LENGTHS = [0, 1, 2, 3, 4, 7, 8, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFF0, 0xFFFFFFFE,
            0xFFFFFFFF]


def _headers(data: bytes, rng: random.Random) -> list[tuple[int, int, int]]:
    """(tag offset, length offset, length size) of element headers, steering elements first.

    Little-endian headers only; a VR after the tag means explicit VR (2- or 4-byte length), none
    means implicit VR (4-byte length). Random positions with a VR add false positives: fine here.
    """
    found: list[tuple[int, int, int]] = []
    for group, element in _STEERING_TAGS:
        needle = struct.pack("<HH", group, element)
        start = data.find(needle)
        while start != -1 and len(found) < 64:
            found.append(_header_at(data, start))
            start = data.find(needle, start + 1)
    for _ in range(8):
        vr = rng.choice(_VRS)
        position = data.find(vr, rng.randrange(max(len(data), 1)))
        if position >= 4:
            found.append(_header_at(data, position - 4))
    return [h for h in found if h[1] + h[2] <= len(data)]


def _header_at(data: bytes, offset: int) -> tuple[int, int, int]:
    vr = data[offset + 4 : offset + 6]
    if vr in _LONG_VRS:
        return offset, offset + 8, 4
    if vr in _VRS:
        return offset, offset + 6, 2
    return offset, offset + 4, 4


def _read_length(data: bytes, at: int, size: int) -> int:
    return struct.unpack_from("<H" if size == 2 else "<I", data, at)[0]


def _write_length(data: bytearray, at: int, size: int, value: int) -> None:
    struct.pack_into("<H" if size == 2 else "<I", data, at, value & (0xFFFF if size == 2 else 0xFFFFFFFF))


def _replace_value(data: bytearray, header: tuple[int, int, int], value: bytes) -> bytearray:
    _, at, size = header
    start = at + size
    if start > len(data):
        return data
    old = _read_length(data, at, size)
    if old == 0xFFFFFFFF or start + old > len(data):
        return data
    if len(value) % 2:
        value += b" " if value[-1:] != b"\x00" else b"\x00"
    out = bytearray(data[:start]) + value + data[start + old :]
    _write_length(out, at, size, len(value))
    return out


def _flip_bits(data: bytearray, rng: random.Random) -> bytearray:
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return data


def _truncate(data: bytearray, rng: random.Random) -> bytearray:
    if rng.random() < 0.5:  # near the end: inside the pixel data or its last element
        return data[: max(0, len(data) - rng.randint(1, 64))]
    return data[: rng.randrange(len(data))]


def _corrupt_length(data: bytearray, rng: random.Random) -> bytearray:
    headers = _headers(bytes(data), rng)
    if not headers:
        return _flip_bits(data, rng)
    _, at, size = rng.choice(headers)
    old = _read_length(data, at, size)
    value = rng.choice(_LENGTHS + [old + 1, old - 1, old * 2, old // 2, len(data), rng.getrandbits(32)])
    _write_length(data, at, size, value)
    return data


def _mutate_tag(data: bytearray, rng: random.Random) -> bytearray:
    headers = _headers(bytes(data), rng)
    if not headers:
        return _flip_bits(data, rng)
    offset = rng.choice(headers)[0]
    group, element = rng.choice(_STEERING_TAGS) if rng.random() < 0.7 else (
        rng.getrandbits(16), rng.getrandbits(16))
    struct.pack_into("<HH", data, offset, group, element)
    return data


def _mutate_vr(data: bytearray, rng: random.Random) -> bytearray:
    headers = [h for h in _headers(bytes(data), rng) if h[1] != h[0] + 4]
    if not headers:
        return _flip_bits(data, rng)
    offset = rng.choice(headers)[0]
    data[offset + 4 : offset + 6] = rng.choice(_VRS + [b"\x00\x00", b"XX", b"  "])
    return data


def _huge_sizes(data: bytearray, rng: random.Random) -> bytearray:
    """Rows, Columns, NumberOfFrames, BitsAllocated and friends set to extreme values."""
    headers = [h for h in _headers(bytes(data), rng)
               if struct.unpack_from("<HH", data, h[0])[0] == 0x0028]
    if not headers:
        return _flip_bits(data, rng)
    header = rng.choice(headers)
    tag = struct.unpack_from("<HH", data, header[0])
    if tag == (0x0028, 0x0008):
        value = rng.choice(_IS_VALUES)
    elif tag in ((0x0028, 0x1050), (0x0028, 0x1051), (0x0028, 0x1052), (0x0028, 0x1053)):
        value = rng.choice([b"0", b"-0", b"1e308", b"-1e308", b"nan", b"inf", b"1\\2\\3"])
    elif tag[1] in (0x3002, 0x1101):  # LUT descriptors: 3 US
        value = struct.pack("<HHH", *(rng.choice(_US_VALUES) for _ in range(3)))
    else:
        value = struct.pack("<H", rng.choice(_US_VALUES))
    return _replace_value(data, header, value)


def _transfer_syntax(data: bytearray, rng: random.Random) -> bytearray:
    needle = struct.pack("<HH", 0x0002, 0x0010)
    offset = data.find(needle)
    if offset == -1:
        return _flip_bits(data, rng)
    uid = rng.choice(_TRANSFER_SYNTAXES).encode()
    return _replace_value(data, _header_at(bytes(data), offset), uid + b"\x00")


def _splice(data: bytearray, rng: random.Random) -> bytearray:
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randint(1, 512))
    if rng.random() < 0.5:
        return data[:start] + data[end:]  # delete a range
    chunk = bytes(data[start:end]) if rng.random() < 0.5 else rng.randbytes(end - start)
    at = rng.randrange(len(data))
    return data[:at] + chunk + data[at:]


MUTATIONS = {
    "bit_flip": _flip_bits,
    "truncate": _truncate,
    "length": _corrupt_length,
    "tag": _mutate_tag,
    "vr": _mutate_vr,
    "huge_size": _huge_sizes,
    "transfer_syntax": _transfer_syntax,
    "splice": _splice,
}


def mutate(data: bytes, rng: random.Random, max_size: int = MAX_INPUT_BYTES) -> bytes:
    """One to three stacked structure-aware mutations of ``data``."""
    out = bytearray(data) or bytearray(b"\x00")
    # Stacked: a huge Rows with a cut pixel data, a new transfer syntax with a bad length, ...
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not out:
            break
        out = rng.choice(list(MUTATIONS.values()))(out, rng)
    return bytes(out[:max_size])


def seed_files() -> list[Path]:
    """pydicom's (and pydicom-data's) small DICOM test files: real encodings of every kind."""
    from pydicom.data.data_manager import DATA_ROOT, get_external_sources

    # Listed from the installed folders: pydicom's own lookup would try to download the rest.
    roots = [Path(DATA_ROOT) / "test_files"]
    roots += [Path(source.data_path) for source in get_external_sources().values()]
    paths = {p for root in roots for p in root.rglob("*")}
    return sorted(p for p in paths if p.is_file() and p.suffix.lower() in ("", ".dcm")
                  and 0 < p.stat().st_size <= SEED_MAX_BYTES)


# --- the child: read inputs, record findings ------------------------------------------------------


class Harness:
    """Reads one input at a time through ``read_file`` and records what goes wrong."""

    def __init__(self, work: Path, crashes: Path, deadline: float, rss_mb: int) -> None:
        from radsearch.reading import ReadError, SkipFile, read_file
        from radsearch.reading.types import METADATA_KEYS

        self.read_file, self.expected = read_file, (ReadError, SkipFile)
        self.ReadError, self.metadata_keys = ReadError, set(METADATA_KEYS)
        self.input_path = work / "current.dcm"
        self.crashes = crashes
        self.deadline = deadline
        self.stats_path = work / f"stats-{os.getpid()}.json"
        self.findings: Counter[str] = Counter()
        self.signatures: set[str] = set()
        beat = work / "heartbeat"
        with open(beat, "r+b") as handle:
            self.heartbeat = mmap.mmap(handle.fileno(), _HEARTBEAT.size)
        self.inputs = 0
        self.last_stats = 0.0
        self.recycle_kb = rss_mb * 1024

    def run(self, data: bytes) -> None:
        self.input_path.write_bytes(data)
        rss_kb = int(_rss_mb(os.getpid()) * 1024)
        self.heartbeat[:] = _HEARTBEAT.pack(
            self.inputs, time.monotonic_ns(), time.process_time_ns(), rss_kb)
        problem = self._check()
        self.inputs += 1
        self.heartbeat[:] = _HEARTBEAT.pack(self.inputs, 0, 0, 0)
        if problem is not None:
            self._record(data, *problem)
        now = time.monotonic()
        if now - self.last_stats > _STATS_EVERY_SECONDS:
            self.write_stats()
            self.last_stats = now
        # Past the deadline, or grown (libFuzzer's corpus, Python's heap) so far that a finding
        # would be hard to tell from the growth: end; the supervisor starts a fresh reader.
        if time.time() > self.deadline or rss_kb > self.recycle_kb:
            self.write_stats()
            os._exit(0)  # libFuzzer would not return to run Python's exit handlers

    def _check(self) -> tuple[str, str, str] | None:
        """(kind, signature, details) of a finding, or None."""
        try:
            result = self.read_file(self.input_path, image_size=IMAGE_SIZE, salt="fuzz")
        except self.expected as error:
            reason = str(error)
            if not reason.strip() or "\n" in reason or "\r" in reason:
                return "contract", f"reason {reason[:40]!r}", f"{type(error).__name__}: {reason!r}"
            if reason.startswith("unreadable"):  # the input file is always readable
                return "contract", f"reason {reason[:40]!r}", _trace(error)
            if isinstance(error, self.ReadError) and "out of memory" in reason:
                cause = error.__context__  # the MemoryError, kept though raised "from None"
                return "memory", f"MemoryError at {_where(cause)}", _trace(cause or error)
            return None
        except BaseException as error:  # noqa: BLE001 - anything else is what we look for
            return "exception", f"{type(error).__name__} at {_where(error)}", _trace(error)
        return self._check_result(result)

    def _check_result(self, result) -> tuple[str, str, str] | None:
        if set(result.metadata) != self.metadata_keys:
            return "contract", "metadata keys", repr(sorted(result.metadata))
        for frame in result.frames:
            pixels = frame.pixels
            if pixels.dtype.name != "uint8" or pixels.shape != (IMAGE_SIZE, IMAGE_SIZE):
                return "contract", "frame pixels", f"{pixels.dtype} {pixels.shape}"
        if not result.frames and not result.report_text:
            return "contract", "empty result", repr(result)
        return None

    def _record(self, data: bytes, kind: str, signature: str, details: str) -> None:
        self.findings[kind] += 1
        key = f"{kind}: {signature}"
        if key in self.signatures:
            return
        self.signatures.add(key)
        save_finding(self.crashes, kind, data, f"{key}\n\n{details}")
        self.write_stats()

    def write_stats(self) -> None:
        self.stats_path.write_text(json.dumps({"findings": dict(self.findings)}))


def _where(error: BaseException | None) -> str:
    """file:line where ``error`` was raised: what tells one finding from another."""
    frames = traceback.extract_tb(error.__traceback__) if error is not None else []
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"


def _trace(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def save_finding(crashes: Path, kind: str, data: bytes, details: str) -> Path:
    crashes.mkdir(parents=True, exist_ok=True)
    path = crashes / f"{kind}-{hashlib.sha1(data).hexdigest()[:12]}.dcm"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(details + "\n")
    return path


def child_main(args: argparse.Namespace) -> None:
    work, crashes = Path(args.work), Path(args.crashes)
    # Address space capped well above --rss-mb: a huge allocation fails with MemoryError
    # (a finding) instead of taking the machine down. (An allocation the kernel grants lazily
    # is caught by the supervisor as the pages fill.)
    limit = (args.rss_mb * 8 + 1024) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    seeds = [p.read_bytes() for p in seed_files()]
    if args.engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["pydicom", "radsearch"]):
            harness = Harness(work, crashes, args.deadline, args.rss_mb)

        def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
            rng = random.Random(seed)
            if rng.random() < 0.3:
                return atheris.Mutate(data, max_size)
            return mutate(data or rng.choice(seeds), rng, max_size)

        corpus = work / "corpus"
        if not corpus.exists():
            corpus.mkdir()
            for i, seed in enumerate(seeds):
                (corpus / f"seed-{i:03d}").write_bytes(seed)
        atheris.Setup(
            [sys.argv[0], str(corpus), f"-max_len={MAX_INPUT_BYTES}", "-timeout=600",
             "-rss_limit_mb=0", "-print_final_stats=0"],
            harness.run, custom_mutator=custom_mutator,
        )
        atheris.Fuzz()
    else:
        harness = Harness(work, crashes, args.deadline, args.rss_mb)
        rng = random.Random(args.seed)
        while True:
            harness.run(mutate(rng.choice(seeds), rng))


# --- the supervisor -------------------------------------------------------------------------------


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def _cpu_ns(pid: int) -> int:
    """User + system CPU time of a process so far (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) * 10**9 // os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0


def _watch(child: subprocess.Popen, work: Path, args: argparse.Namespace) -> tuple[str, str] | None:
    """Wait for the child; kill it on a hang or a memory blow-up and say which."""
    with open(work / "heartbeat", "rb") as handle:
        beat = mmap.mmap(handle.fileno(), _HEARTBEAT.size, access=mmap.ACCESS_READ)
        while child.poll() is None:
            time.sleep(_POLL_SECONDS)
            if time.time() > args.deadline + args.timeout:  # past the end, stuck in start-up
                child.kill()
                child.wait()
                return None
            _, started, cpu_ns, rss_kb = _HEARTBEAT.unpack(beat[:])
            if not started:
                continue
            # CPU time, so that a loaded machine is no hang; wall time too, for a blocked reader.
            cpu = (_cpu_ns(child.pid) - cpu_ns) / 1e9
            wall = (time.monotonic_ns() - started) / 1e9
            if cpu > args.timeout or wall > 10 * args.timeout:
                verdict = ("hang", f"one input took {cpu:.1f} s of CPU, {wall:.1f} s in all "
                                   f"(limit {args.timeout} s of CPU)")
            elif (grown := _rss_mb(child.pid) - rss_kb / 1024) > args.rss_mb:
                verdict = ("memory", f"one input grew the reader by {grown:.0f} MiB "
                                     f"(limit {args.rss_mb})")
            else:
                continue
            data = (work / "current.dcm").read_bytes()  # read before the kill: it is the input
            child.kill()
            child.wait()
            return verdict[0], verdict[1] + f"\n\n{len(data)} bytes"
    if child.returncode not in (0, None):
        return "crash", f"the reader process died (exit status {child.returncode})"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="total fuzzing time")
    parser.add_argument("--crashes", type=Path,
                        default=Path(tempfile.gettempdir()) / "radsearch-fuzz-crashes",
                        help="where findings' inputs are saved")
    parser.add_argument("--engine", choices=("atheris", "random"), default=None,
                        help="default: atheris when installed, else random")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="CPU seconds one input may take (10 times that in wall time)")
    parser.add_argument("--rss-mb", type=int, default=1024, help="memory one input may add to the reader")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine is None:
        try:
            import atheris  # noqa: F401
            args.engine = "atheris"
        except ImportError:
            print("atheris is not installed (pip install atheris): random mutation engine")
            args.engine = "random"
    if args.child:
        child_main(args)
        return
    supervise(args)


def supervise(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="radsearch-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    (work / "heartbeat").write_bytes(bytes(_HEARTBEAT.size))
    args.crashes.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in args.crashes.glob("*.dcm")}
    started = time.time()
    deadline = args.deadline = started + args.seconds
    child = None
    inputs, findings, children = 0, Counter(), 0
    print(f"fuzzing read_file with {args.engine} for {args.seconds:.0f} s on "
          f"{len(seed_files())} seed files; findings go to {args.crashes}", flush=True)
    try:
        while time.time() < deadline - 1:
            children += 1
            command = [sys.executable, os.path.abspath(__file__), "--child", "--work", str(work),
                       "--crashes", str(args.crashes), "--engine", args.engine,
                       "--deadline", str(deadline), "--rss-mb", str(args.rss_mb),
                       "--seed", str(args.seed + children)]
            with open(work / "child.log", "ab") as log:
                child = subprocess.Popen(command, stdout=log, stderr=log)
                verdict = _watch(child, work, args)
            inputs += _HEARTBEAT.unpack((work / "heartbeat").read_bytes())[0]
            for stats_file in work.glob("stats-*.json"):
                findings.update(json.loads(stats_file.read_text())["findings"])
                stats_file.unlink()
            if verdict is not None:
                kind, details = verdict
                findings[kind] += 1
                saved = save_finding(args.crashes, kind, (work / "current.dcm").read_bytes(), details)
                print(f"  {kind}: {saved}", flush=True)
            (work / "heartbeat").write_bytes(bytes(_HEARTBEAT.size))
    finally:
        if child is not None and child.poll() is None:
            child.kill()
        log_tail = (work / "child.log").read_text(errors="replace")[-2000:] if (work / "child.log").exists() else ""
        shutil.rmtree(work, ignore_errors=True)
    new = sorted(p.name for p in args.crashes.glob("*.dcm") if p.name not in before)
    print(f"inputs tried: {inputs} in {time.time() - started:.0f} s "
          f"({children} reader process(es), engine {args.engine})")
    print("findings by kind: " + (", ".join(f"{k} {v}" for k, v in sorted(findings.items())) or "none"))
    print(f"distinct inputs saved: {len(new)}" + "".join(f"\n  {args.crashes / n}" for n in new))
    if findings.get("crash") and log_tail:
        print("last reader output:\n" + log_tail)


if __name__ == "__main__":
    main()
