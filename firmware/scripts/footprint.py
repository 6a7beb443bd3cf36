#!/usr/bin/env python3
"""Flash and static RAM of a firmware ELF, and each crate's share of it.

Usage: footprint.py [--budget-core-adapter BYTES] [--json] ELF...
       footprint.py --ram-diff ELF_A ELF_B   (static RAM symbols that differ)
       footprint.py --table [LABEL=]ELF...   (one line an image, side by side)
       footprint.py --delta BASELINE ELF [--budget BYTES] [--top N]
                                             (what ELF adds to BASELINE: flash,
                                             static RAM, the symbols that grew)

No tools needed beyond Python 3: the ELF32 section headers give the totals
(flash = every allocated section placed in flash, plus the initial values
of .data; static RAM = .data + .bss + .uninit, the stack excluded), and the
symbol table gives the shares: every sized function or object is charged to
the crate at the root of its (v0 or legacy) mangled path. A generic function
is charged to the crate that defines it, wherever it was instantiated (a
`core::slice::sort` instantiated for peng3dnet-core's registry is `core`'s);
code inlined into another crate's function is charged to that function's
crate; anonymous constants (string literals, tables) stay unattributed.
So the shares are an estimate, by the usual method of cargo-bloat.

A second estimate follows the DWARF line tables (the firmware is built with
debug info, which never reaches flash): each byte of code is charged to the
crate whose source line it was compiled from, so code inlined from
peng3dnet-core into the application's task counts as peng3dnet-core's.
Read-only data has no line information; that column charges .rodata by
symbol as above.
"""
import json
import re
import struct
import sys
from collections import defaultdict

RAM_BASE = 0x2000_0000
OURS = ("peng3dnet_core", "peng3dnet_embassy")


def read_elf(path):
    data = open(path, "rb").read()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        raise SystemExit(f"{path}: not a little-endian ELF32 file")
    (e_shoff,) = struct.unpack_from("<I", data, 0x20)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    sections = []
    for i in range(e_shnum):
        f = struct.unpack_from("<IIIIIIIIII", data, e_shoff + i * e_shentsize)
        sections.append(dict(name_off=f[0], type=f[1], flags=f[2], addr=f[3], offset=f[4],
                             size=f[5], link=f[6], info=f[7], entsize=f[9]))
    shstr = sections[e_shstrndx]

    def cstr(base, off):
        end = data.index(b"\0", base + off)
        return data[base + off:end].decode("utf-8", "replace")

    for s in sections:
        s["name"] = cstr(shstr["offset"], s["name_off"])
    symbols = []
    for s in sections:
        if s["type"] != 2:  # SHT_SYMTAB
            continue
        strtab = sections[s["link"]]
        for off in range(s["offset"], s["offset"] + s["size"], 16):
            name, value, size, info, _other, shndx = struct.unpack_from("<IIIBBH", data, off)
            if size == 0 or shndx == 0 or shndx >= len(sections):
                continue
            kind = info & 0xF
            if kind not in (1, 2):  # OBJECT, FUNC
                continue
            symbols.append(dict(name=cstr(strtab["offset"], name), addr=value & ~1 if kind == 2 else value,
                                size=size, section=sections[shndx]["name"]))
    return data, sections, symbols


# ---- crate of a mangled symbol -------------------------------------------------

B62 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class V0:
    """Just enough of a Rust v0 demangler to find a path's root crate."""

    def __init__(self, s):
        self.s = s

    def base62(self, i):
        if self.s[i] == "_":
            return 0, i + 1
        n = 0
        while self.s[i] != "_":
            n = n * 62 + B62.index(self.s[i])
            i += 1
        return n + 1, i + 1

    def ident(self, i):
        if self.s[i] == "u":
            i += 1
        m = re.compile(r"\d+").match(self.s, i)
        n, i = int(m.group()), m.end()
        if self.s[i] == "_":
            i += 1
        return self.s[i:i + n], i + n

    def disamb(self, i):
        if self.s[i] == "s":
            _, i = self.base62(i + 1)
        return i

    def path(self, i, depth=0):
        if depth > 50:
            return None
        c = self.s[i]
        if c == "C":
            name, _ = self.ident(self.disamb(i + 1))
            return name
        if c == "N":
            return self.path(i + 2, depth + 1)
        if c in "MX":
            return self.path(self.disamb(i + 1), depth + 1)
        if c == "Y":
            return self.type(i + 1, depth + 1)
        if c == "I":
            return self.path(i + 1, depth + 1)
        if c == "B":
            pos, _ = self.base62(i + 1)
            return self.path(pos + 2, depth + 1)  # positions count after "_R"
        return None

    def type(self, i, depth):
        c = self.s[i]
        if c in "CNMXYIB":
            return self.path(i, depth)
        if c in "RQ":
            i += 1
            if self.s[i] == "L":
                _, i = self.base62(i + 1)
            return self.type(i, depth + 1)
        if c in "PSOA":
            return self.type(i + 1, depth + 1)
        return "core"  # primitive types: their impls live in core


def crate_of(name):
    if name.startswith("_R"):
        s = name[2:]
        s = re.sub(r"^\d+", "", s)  # encoding version
        try:
            return V0(s).path(0) or "?"
        except (ValueError, IndexError, AttributeError):
            return "?"
    if name.startswith("_ZN"):
        m = re.match(r"_ZN(\d+)", name)
        n = int(m.group(1))
        first = name[m.end():m.end() + n]
        if first.startswith("_$LT$"):
            inner = first[5:]
            inner = re.sub(r"^\$RF\$|^\$BP\$|^\$u5b\$", "", inner)
            return inner.split("..")[0].split("$")[0] or "?"
        return first
    if name.startswith(".L") or name.startswith("$"):
        return "(anonymous constants)"
    # Unmangled: the runtime's and the C ABI's symbols.
    if name in ("memcpy", "memmove", "memset", "memcmp", "bcmp") or name.startswith("__aeabi") \
            or re.match(r"__(u?div|mod|mul|add|sub|neg|ash|lsh|cmp|fix|float|extend|trunc|un|eq|ne|ge|gt|le|lt|pow|clz)", name):
        return "compiler_builtins"
    if name in ("Reset", "__INTERRUPTS", "__EXCEPTIONS", "__RESET_VECTOR", "DefaultHandler_",
                "HardFaultTrampoline", "__pre_init", "DefaultPreInit") or name.startswith("Default"):
        return "cortex_m_rt"
    if name in ("DefaultHandler", "HardFault", "SysTick", "_embassy_time_now", "_embassy_time_schedule_wake",
                "__pender", "main"):
        return "(board)"
    return "(other: " + name + ")"


# ---- DWARF line tables -----------------------------------------------------------

def uleb(d, i):
    r = shift = 0
    while True:
        b = d[i]
        i += 1
        r |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return r, i


def sleb(d, i):
    r = shift = 0
    while True:
        b = d[i]
        i += 1
        r |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                r -= 1 << shift
            return r, i


def cstring(d, i):
    end = d.index(b"\0", i)
    return d[i:end].decode("utf-8", "replace"), end + 1


FIXED = {0x01: None, 0x05: 2, 0x06: 4, 0x07: 8, 0x0b: 1, 0x0c: 1, 0x0e: 4, 0x10: 4, 0x11: 1, 0x12: 2,
         0x13: 4, 0x14: 8, 0x17: 4, 0x19: 0, 0x1c: 4, 0x1d: 4, 0x1e: 16, 0x1f: 4, 0x20: 8, 0x21: 0,
         0x25: 1, 0x26: 2, 0x27: 3, 0x28: 4, 0x29: 1, 0x2a: 2, 0x2b: 3, 0x2c: 4}
ULEB_FORMS = (0x0f, 0x15, 0x1a, 0x1b, 0x22, 0x23)


def form_value(d, i, form, addr_size, strs):
    """(value, next offset) of one attribute; strings resolved."""
    if form == 0x08:
        return cstring(d, i)
    if form in (0x0e, 0x1f):
        (off,) = struct.unpack_from("<I", d, i)
        sec = strs.get(form)
        return (cstring(sec, off)[0] if sec is not None else None), i + 4
    if form == 0x01:
        return int.from_bytes(d[i:i + addr_size], "little"), i + addr_size
    if form in FIXED:
        n = FIXED[form]
        return int.from_bytes(d[i:i + n], "little"), i + n
    if form in ULEB_FORMS:
        return uleb(d, i)
    if form == 0x0d:
        return sleb(d, i)
    if form in (0x09, 0x18):
        n, i = uleb(d, i)
        return None, i + n
    if form == 0x0a:
        return None, i + 1 + d[i]
    if form == 0x03:
        return None, i + 2 + struct.unpack_from("<H", d, i)[0]
    if form == 0x04:
        return None, i + 4 + struct.unpack_from("<I", d, i)[0]
    raise ValueError(f"DWARF form {form:#x}")


def comp_dirs(sec):
    """line table offset -> compilation directory, from each unit's first DIE."""
    info, abbrev = sec.get(".debug_info"), sec.get(".debug_abbrev")
    strs = {0x0e: sec.get(".debug_str"), 0x1f: sec.get(".debug_line_str")}
    out = {}
    if info is None or abbrev is None:
        return out
    i = 0
    while i + 11 <= len(info):
        (length,) = struct.unpack_from("<I", info, i)
        end = i + 4 + length
        (version,) = struct.unpack_from("<H", info, i + 4)
        if version >= 5:
            addr_size = info[i + 7]
            (abbr_off,) = struct.unpack_from("<I", info, i + 8)
            j = i + 12
        else:
            (abbr_off,) = struct.unpack_from("<I", info, i + 6)
            addr_size = info[i + 10]
            j = i + 11
        code, j = uleb(info, j)
        # find the abbreviation
        a = abbr_off
        attrs = None
        while True:
            c, a = uleb(abbrev, a)
            if c == 0:
                break
            _tag, a = uleb(abbrev, a)
            a += 1  # children
            spec = []
            while True:
                at, a = uleb(abbrev, a)
                fm, a = uleb(abbrev, a)
                if fm == 0x21:
                    _, a = sleb(abbrev, a)
                if at == 0 and fm == 0:
                    break
                spec.append((at, fm))
            if c == code:
                attrs = spec
                break
        stmt = cdir = None
        for at, fm in attrs or []:
            v, j = form_value(info, j, fm, addr_size, strs)
            if at == 0x10:
                stmt = v
            elif at == 0x1b:
                cdir = v
        if stmt is not None:
            out[stmt] = cdir
        i = end
    return out


def line_ranges(sec):
    """[(start, end, file path)] for every row of every line table."""
    line = sec.get(".debug_line")
    if line is None:
        return []
    strs = {0x0e: sec.get(".debug_str"), 0x1f: sec.get(".debug_line_str")}
    cdirs = comp_dirs(sec)
    ranges = []
    i = 0
    while i + 4 <= len(line):
        start = i
        (length,) = struct.unpack_from("<I", line, i)
        end = i + 4 + length
        (version,) = struct.unpack_from("<H", line, i + 4)
        j = i + 6
        addr_size = 4
        if version >= 5:
            addr_size = line[j]
            j += 2
        (hlen,) = struct.unpack_from("<I", line, j)
        j += 4
        prog = j + hlen
        min_inst = line[j]
        j += 1
        if version >= 4:
            j += 1  # max ops per instruction
        j += 1  # default is_stmt
        line_base = struct.unpack_from("<b", line, j)[0]
        line_range = line[j + 1]
        opcode_base = line[j + 2]
        std_lens = list(line[j + 3:j + 3 + opcode_base - 1])
        j += 3 + opcode_base - 1
        cdir = cdirs.get(start) or ""
        if version >= 5:
            def entries(j):
                nfmt = line[j]
                j += 1
                fmts = []
                for _ in range(nfmt):
                    ct, j = uleb(line, j)
                    fm, j = uleb(line, j)
                    fmts.append((ct, fm))
                count, j = uleb(line, j)
                out = []
                for _ in range(count):
                    e = {}
                    for ct, fm in fmts:
                        v, j = form_value(line, j, fm, addr_size, strs)
                        e[ct] = v
                    out.append(e)
                return out, j
            dir_entries, j = entries(j)
            file_entries, j = entries(j)
            dirs = [e.get(1) or "" for e in dir_entries]
            files = [(e.get(1) or "?", e.get(2) or 0) for e in file_entries]
        else:
            dirs = [cdir]
            while line[j] != 0:
                d, j = cstring(line, j)
                dirs.append(d)
            j += 1
            files = [("?", 0)]
            while line[j] != 0:
                name, j = cstring(line, j)
                di, j = uleb(line, j)
                _, j = uleb(line, j)
                _, j = uleb(line, j)
                files.append((name, di))
        paths = []
        for name, di in files:
            d = dirs[di] if di < len(dirs) else ""
            if d and not d.startswith("/") and cdir:
                d = cdir.rstrip("/") + "/" + d
            paths.append(name if name.startswith("/") else (d.rstrip("/") + "/" + name if d else name))
        # run the program
        j = prog
        addr, fidx = 0, 1
        rows = []
        while j < end:
            op = line[j]
            j += 1
            if op >= opcode_base:
                adj = op - opcode_base
                addr += (adj // line_range) * min_inst
                rows.append((addr, fidx))
            elif op == 0:
                n, j = uleb(line, j)
                sub = line[j]
                if sub == 1:
                    rows.append((addr, None))  # end of sequence
                    for (a0, f0), (a1, _f1) in zip(rows, rows[1:]):
                        if f0 is not None and a1 > a0:
                            ranges.append((a0, a1, paths[f0] if f0 < len(paths) else "?"))
                    rows = []
                    addr, fidx = 0, 1
                elif sub == 2:
                    addr = int.from_bytes(line[j + 1:j + n], "little")
                j += n
            elif op == 1:
                rows.append((addr, fidx))
            elif op == 2:
                v, j = uleb(line, j)
                addr += v * min_inst
            elif op == 3:
                _, j = sleb(line, j)
            elif op == 4:
                fidx, j = uleb(line, j)
            elif op == 8:
                addr += ((255 - opcode_base) // line_range) * min_inst
            elif op == 9:
                addr += struct.unpack_from("<H", line, j)[0]
                j += 2
            else:
                for _ in range(std_lens[op - 1]):
                    _, j = uleb(line, j)
        i = end
    return ranges


_crate_cache = {}


def crate_of_path(path):
    """The crate a source file belongs to."""
    m = re.search(r"/library/([a-z_]+)/src/", path)
    if m:
        return m.group(1)
    m = re.search(r"/registry/src/[^/]+/([A-Za-z0-9_\-]+?)-\d+\.\d+[^/]*/", path)
    if m:
        return m.group(1).replace("-", "_")
    if path in _crate_cache:
        return _crate_cache[path]
    # A path dependency: the package of the nearest Cargo.toml above it.
    import os
    d = os.path.dirname(path)
    name = "?"
    while d and d != "/":
        toml = os.path.join(d, "Cargo.toml")
        if os.path.isfile(toml):
            m = re.search(r'^\s*name\s*=\s*"([^"]+)"', open(toml).read(), re.M)
            if m and "[package]" in open(toml).read():
                name = m.group(1).replace("-", "_")
                break
        d = os.path.dirname(d)
    _crate_cache[path] = name
    return name


def code_by_line(data, sections, text_lo, text_hi):
    sec = {s["name"]: data[s["offset"]:s["offset"] + s["size"]] for s in sections
           if s["name"].startswith(".debug_")}
    per = defaultdict(int)
    covered = 0
    spans = sorted(line_ranges(sec))
    last = text_lo
    for a0, a1, path in spans:
        a0, a1 = max(a0, last), min(a1, text_hi)
        if a1 <= a0:
            continue
        per[crate_of_path(path)] += a1 - a0
        covered += a1 - a0
        last = a1
    return per, covered


# ---- report ----------------------------------------------------------------------

def analyse(path):
    data, sections, symbols = read_elf(path)
    flash = ram = 0
    per_section = []
    for s in sections:
        if not s["flags"] & 2 or s["size"] == 0:  # SHF_ALLOC
            continue
        in_ram = s["addr"] >= RAM_BASE
        nobits = s["type"] == 8
        if in_ram:
            ram += s["size"]
            if not nobits:
                flash += s["size"]  # initial values of .data live in flash
        else:
            flash += s["size"]
        per_section.append((s["name"], s["addr"], s["size"]))
    seen = set()
    crates = defaultdict(lambda: [0, 0])
    for sym in symbols:
        key = (sym["addr"], sym["size"])
        if key in seen:
            continue
        seen.add(key)
        c = crate_of(sym["name"])
        if c.startswith("(other"):
            c = "(other)"
        crates[c][1 if sym["addr"] >= RAM_BASE else 0] += sym["size"]
    text = [s for s in sections if s["name"] == ".text"]
    by_line, covered, rodata = {}, 0, defaultdict(int)
    if text:
        lo, hi = text[0]["addr"], text[0]["addr"] + text[0]["size"]
        try:
            by_line, covered = code_by_line(data, sections, lo, hi)
        except (ValueError, IndexError, struct.error) as e:
            print(f"footprint: no line-table estimate ({e})", file=sys.stderr)
        for sym in symbols:
            if sym["section"] == ".rodata":
                rodata[crate_of(sym["name"])] += sym["size"]
    return dict(file=path, flash=flash, ram=ram, sections=per_section,
                text=text[0]["size"] if text else 0, covered=covered,
                by_line=dict(by_line), rodata_by_symbol=dict(rodata),
                crates={k: {"flash": v[0], "ram": v[1]} for k, v in crates.items()})


def report(r, budget):
    kib = lambda n: f"{n / 1024:6.1f} KiB"
    print(f"footprint of {r['file']}")
    print(f"  flash {r['flash']:7} bytes ({kib(r['flash'])})   static RAM {r['ram']:7} bytes ({kib(r['ram'])}, stack not included)")
    print("  sections: " + ", ".join(f"{n} {s}" for n, _a, s in r["sections"]))
    rows = sorted(r["crates"].items(), key=lambda kv: -(kv[1]["flash"] + kv[1]["ram"]))
    print(f"  {'crate':28} {'flash':>8} {'share':>6} {'RAM':>8}")
    for name, v in rows:
        share = 100.0 * v["flash"] / r["flash"] if r["flash"] else 0
        print(f"  {name:28} {v['flash']:8} {share:5.1f}% {v['ram']:8}")
    ours = sum(r["crates"].get(c, {"flash": 0})["flash"] for c in OURS)
    ours_ram = sum(r["crates"].get(c, {"ram": 0})["ram"] for c in OURS)
    share = 100.0 * ours / r["flash"] if r["flash"] else 0
    verdict = ""
    if budget:
        verdict = f" -> {'within' if ours <= budget else 'OVER'} the {budget // 1024} KiB budget"
    print(f"  by symbol: peng3dnet-core + peng3dnet-embassy = {ours} bytes of flash ({kib(ours).strip()}, {share:.1f}%), "
          f"{ours_ram} bytes of static RAM{verdict}")
    ok = ours <= budget if budget else True
    if r["by_line"]:
        bl = r["by_line"]
        print(f"  code by source line (inlined code counted where it was written; {r['covered']} of {r['text']} bytes of .text have line info):")
        for name, n in sorted(bl.items(), key=lambda kv: -kv[1])[:12]:
            print(f"    {name:26} {n:8} {100.0 * n / r['flash']:5.1f}%")
        code = sum(bl.get(c, 0) for c in OURS)
        ro = sum(r["rodata_by_symbol"].get(c, 0) for c in OURS)
        both = code + ro
        verdict = ""
        if budget:
            verdict = f" -> {'within' if both <= budget else 'OVER'} the {budget // 1024} KiB budget"
            ok = ok and both <= budget
        print(f"  by line: peng3dnet-core + peng3dnet-embassy = {code} bytes of code + {ro} of named read-only data "
              f"= {both} bytes ({kib(both).strip()}, {100.0 * both / r['flash']:.1f}% of flash){verdict}")
    return ok


def short(name):
    """A readable tail of a mangled static's name (its last identifiers)."""
    if not name.startswith("_R"):
        return name
    parts, i, s = [], 2, name
    while i < len(s):
        m = re.compile(r"s[0-9a-zA-Z]*_(?=\d)").match(s, i)
        if m:  # a disambiguator (crate hashes differ between builds)
            i = m.end()
            continue
        m = re.compile(r"(\d+)_?").match(s, i)
        if m:
            n = int(m.group(1))
            parts.append(s[m.end():m.end() + n])
            i = m.end() + n
            continue
        i += 1
    parts = [p for p in parts if not p.startswith("__")]
    return "::".join(parts[-3:]) or name


def ram_diff(a, b):
    """Static RAM symbols whose size differs between two builds."""
    def ram(path):
        _d, _s, syms = read_elf(path)
        out = defaultdict(int)
        for sym in syms:
            if sym["addr"] >= RAM_BASE:
                out[short(sym["name"])] += sym["size"]
        return out
    ra, rb = ram(a), ram(b)
    total = 0
    for k in sorted(set(ra) | set(rb)):
        if ra.get(k, 0) != rb.get(k, 0):
            d = rb.get(k, 0) - ra.get(k, 0)
            total += d
            print(f"  {k:50} {ra.get(k, 0):7} -> {rb.get(k, 0):7}  ({d:+})")
    print(f"  {'total':50} {total:+}")
    return 0


def table(args):
    """One line an image: flash, static RAM, core + adapter by symbol."""
    rows = []
    for a in args:
        label, _, path = a.rpartition("=")
        r = analyse(path)
        ours = sum(r["crates"].get(c, {"flash": 0})["flash"] for c in OURS)
        rows.append((label or path, r["flash"], r["ram"], ours))
    w = max(len(r[0]) for r in rows)
    print(f"  {'image':{w}} {'flash':>9} {'static RAM':>11} {'core+adapter':>13}")
    for label, flash, ram, ours in rows:
        print(f"  {label:{w}} {flash:9,} {ram:11,} {ours:13,}")
    return 0


def demangled(names):
    """Readable names (llvm-nm's demangler when installed; crate hashes and
    anonymous constants' numbering removed, so two builds compare)."""
    import shutil
    import subprocess
    out = list(names)
    tool = shutil.which("llvm-nm")
    if tool:
        # llvm-nm --demangle on a symbol list is not offered; llvm-cxxfilt is
        # not always installed: feed the names through llvm-nm's sibling.
        filt = shutil.which("llvm-cxxfilt") or shutil.which(tool.replace("llvm-nm", "llvm-cxxfilt"))
        if filt:
            try:
                r = subprocess.run([filt], input="\n".join(out), capture_output=True, text=True, check=True)
                got = r.stdout.split("\n")
                if len(got) >= len(out):
                    out = got[:len(out)]
            except (OSError, subprocess.CalledProcessError):
                pass
    clean = []
    for raw, n in zip(names, out):
        if raw.startswith(".L") or raw.startswith("$"):
            clean.append("(anonymous constants)")
            continue
        n = n if n != raw else short(raw)
        clean.append(re.sub(r"\[[0-9a-f]{8,16}\]", "", n))
    return clean


def by_name(path):
    """Flash and RAM bytes of each symbol name of an image (the image's own
    crate, named after its file, is called `<bin>`, so that two images'
    application tasks compare)."""
    import os
    own = re.compile(r"\b" + re.escape(os.path.basename(path).replace("-", "_")) + r"::")
    _d, _s, syms = read_elf(path)
    seen = set()
    keep = []
    for sym in syms:
        key = (sym["addr"], sym["size"])
        if key not in seen:
            seen.add(key)
            keep.append(sym)
    names = demangled([s["name"] for s in keep])
    flash, ram = defaultdict(int), defaultdict(int)
    for sym, n in zip(keep, names):
        n = own.sub("<bin>::", n)
        (ram if sym["addr"] >= RAM_BASE else flash)[n] += sym["size"]
    return flash, ram


def delta(base, image, budget, top):
    """What `image` adds to `base`; returns 1 when the flash added is over
    `budget` (0: no budget)."""
    a, b = analyse(base), analyse(image)
    df, dr = b["flash"] - a["flash"], b["ram"] - a["ram"]
    print(f"baseline {base}: flash {a['flash']:,} B, static RAM {a['ram']:,} B")
    print(f"image    {image}: flash {b['flash']:,} B, static RAM {b['ram']:,} B")
    verdict = ""
    if budget:
        verdict = f" -> {'within' if df <= budget else 'OVER'} the {budget:,}-byte target"
    print(f"over the baseline: flash {df:+,} B (text + rodata + data){verdict}; static RAM {dr:+,} B (data + bss)")
    fa, ra = by_name(base)
    fb, rb = by_name(image)
    for title, x, y in (("flash", fa, fb), ("static RAM", ra, rb)):
        rows = sorted(((y.get(k, 0) - x.get(k, 0), k) for k in set(x) | set(y)), key=lambda r: -abs(r[0]))
        rows = [r for r in rows if r[0]]
        print(f"  {title} by symbol, largest changes first ({len(rows)} changed):")
        for d, k in rows[:top]:
            print(f"    {d:+7}  {k[:150]}")
    return 1 if budget and df > budget else 0


def main(argv):
    if argv[:1] == ["--delta"] and len(argv) >= 3:
        budget, top = 0, 30
        rest = argv[3:]
        while rest:
            if rest[0] == "--budget":
                budget = int(rest[1])
            elif rest[0] == "--top":
                top = int(rest[1])
            else:
                print(__doc__)
                return 2
            rest = rest[2:]
        return delta(argv[1], argv[2], budget, top)
    if argv[:1] == ["--ram-diff"] and len(argv) == 3:
        return ram_diff(argv[1], argv[2])
    if argv[:1] == ["--table"] and len(argv) > 1:
        return table(argv[1:])
    budget = 0
    as_json = False
    files = []
    it = iter(argv)
    for a in it:
        if a == "--budget-core-adapter":
            budget = int(next(it))
        elif a == "--json":
            as_json = True
        else:
            files.append(a)
    if not files:
        print(__doc__)
        return 2
    results = [analyse(f) for f in files]
    if as_json:
        print(json.dumps(results, indent=1))
        return 0
    ok = True
    for r in results:
        ok = report(r, budget) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
