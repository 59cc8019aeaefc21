#!/usr/bin/python3
"""gen-man.py — build the man pages from their one source each.

  gmcpctl(8)         docs/man/gmcpctl.8.in + the text of `gmcpctl --help`
                     (commands, options, environment, exit status)
  mod_gemini_mcp(7)  docs/man/mod_gemini_mcp.7.in + docs/directives.md
                     (every directive table, its notes and the mod_dbd section)

Usage: gen-man.py --gmcpctl PATH/TO/gmcpctl --directives docs/directives.md --out DIR

Templates are roff with @PLACEHOLDER@ lines; nothing from the sources is copied
by hand. Only the Python standard library is used (Debian's /usr/bin/python3).
"""
import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


# ---- roff helpers -------------------------------------------------------------------

def esc(text):
    """Plain text to roff: backslashes, hyphens that are options, line-leading dots."""
    text = text.replace("\\", "\\e")
    text = re.sub(r"(?<![\w])-", r"\\-", text)
    return text


def guard(line):
    """A roff text line must not start with a control character."""
    return "\\&" + line if line[:1] in (".", "'") else line


def inline_md(text):
    """Markdown inline markup (code, bold, links) to roff fonts."""
    out = []
    pos = 0
    # `code`, **bold**, [text](link)
    for m in re.finditer(r"`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\([^)]*\)", text):
        out.append(esc(text[pos:m.start()]))
        if m.group(1) is not None:
            out.append("\\fB" + esc(m.group(1)) + "\\fR")
        elif m.group(2) is not None:
            out.append("\\fB" + esc(m.group(2)) + "\\fR")
        else:
            out.append(esc(m.group(3)))
        pos = m.end()
    out.append(esc(text[pos:]))
    return "".join(out)


def fill(template, values):
    lines = []
    for line in template.splitlines():
        m = re.fullmatch(r"@([A-Z_]+)@", line.strip())
        if m and m.group(1) != "VERSION":
            if m.group(1) not in values:
                sys.exit("gen-man: no value for @%s@" % m.group(1))
            lines.extend(values[m.group(1)])
        else:
            lines.append(line.replace("@VERSION@", values["VERSION"]))
    return "\n".join(lines) + "\n"


# ---- gmcpctl(8) from --help ----------------------------------------------------------

def parse_help(text):
    """Split `gmcpctl --help` into its sections: (synopsis, about, commands,
    options, trailer). commands/options are lists of (term, [description lines])."""
    lines = text.rstrip("\n").split("\n")
    synopsis = lines[0].split(":", 1)[1].strip() if lines[0].startswith("Usage:") else ""
    sections = {"head": [], "Commands": [], "Options": [], "tail": []}
    cur = "head"
    for line in lines[1:]:
        if line.rstrip(":") in ("Commands", "Options") and line.endswith(":"):
            cur = line[:-1]
            continue
        if cur in ("Commands", "Options") and not line.strip():
            cur = "tail" if cur == "Options" else cur
            continue
        sections[cur].append(line)

    def entries(block):
        out = []
        # Descriptions start in one column (that of the continuation lines); a term
        # that reaches it is followed by two spaces instead.
        cont = [len(l) - len(l.lstrip(" ")) for l in block
                if len(l) - len(l.lstrip(" ")) >= 10]
        col = min(cont) if cont else None
        for line in block:
            indent = len(line) - len(line.lstrip(" "))
            if indent < 10:                       # a new entry (2 or 6 spaces)
                if col and len(line) > col and line[col - 1] == " " and line[col] != " ":
                    parts = [line[:col].strip(), line[col:].strip()]
                else:
                    parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
                out.append((parts[0], [parts[1]] if len(parts) > 1 else []))
            elif out:
                out[-1][1].append(line.strip())
        return out

    about = " ".join(l.strip() for l in sections["head"] if l.strip())
    return synopsis, about, entries(sections["Commands"]), entries(sections["Options"]), \
        [l for l in sections["tail"] if l.strip()]


def tp_entries(entries):
    out = []
    for term, desc in entries:
        out.append(".TP")
        out.append("\\fB" + esc(term) + "\\fR")
        if desc:
            out.append(guard(esc(" ".join(desc))))
    return out


def gmcpctl_page(gmcpctl, template):
    help_text = subprocess.run([gmcpctl, "--help"], check=True, capture_output=True,
                               text=True, env={"PATH": "/usr/bin:/bin"}).stdout
    version = subprocess.run([gmcpctl, "--version"], check=True, capture_output=True,
                             text=True).stdout.split()[1]
    synopsis, about, commands, options, tail = parse_help(help_text)
    if not commands or not options:
        sys.exit("gen-man: %s --help has no Commands: or Options: section" % gmcpctl)
    # The trailer: "Environment: ..." then notes, then "Exit status: ..." to the end.
    trailer = " ".join(l.strip() for l in tail)
    env, notes, exits = "", trailer, ""
    m = re.search(r"Exit status:\s*(.*)$", notes)
    if m:
        exits, notes = m.group(1), notes[:m.start()].strip()
    m = re.match(r"Environment:\s*(.*?\.)\s+(.*)$", notes)
    if m:
        env, notes = m.group(1), m.group(2)
    envlines = []
    m = re.match(r"([A-Z_][A-Z0-9_]*)\s+(.*)$", env)
    if m:
        envlines = [".TP", "\\fB" + m.group(1) + "\\fR", guard(esc(m.group(2)))]
    elif env:
        envlines = [guard(esc(env))]
    exitlines = []
    for code, what in re.findall(r"(\d+) ([^,]+?)(?:,|\.$|$)", exits):
        exitlines += [".TP", "\\fB" + code + "\\fR", guard(esc(what.strip()))]
    return version, fill(template, {
        "VERSION": version,
        "SYNOPSIS": ["\\fBgmcpctl\\fR " + esc(synopsis.replace("gmcpctl", "", 1).strip())],
        "ABOUT": [guard(esc(about))],
        "COMMANDS": tp_entries(commands),
        "OPTIONS": tp_entries(options),
        "NOTES": [guard(esc(notes))] if notes else [],
        "ENVIRONMENT": envlines,
        "EXIT_STATUS": exitlines,
    })


# ---- mod_gemini_mcp(7) from docs/directives.md --------------------------------------

def split_row(line):
    """One markdown table row into cells; `\\|` is a literal bar inside a cell."""
    cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
    return [c.strip().replace("\\|", "|") for c in cells]


def directives_roff(md_text):
    out = []
    lines = md_text.split("\n")
    i = 0
    para = []

    def flush():
        if para:
            out.append(".PP")
            out.append(guard(inline_md(" ".join(para))))
            para.clear()

    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("# "):                     # the page title: skip
            i += 1
            continue
        if line.startswith("## "):
            flush()
            title = re.sub(r"\s*\(see [^)]*\)\s*$", "", line[3:]).strip()
            out.append(".SS " + esc(re.sub(r"`", "", title)))
            i += 1
            continue
        if line.startswith("|"):
            flush()
            header = split_row(line)
            i += 2                                     # header and the |---| rule
            while i < len(lines) and lines[i].startswith("|"):
                row = dict(zip(header, split_row(lines[i])))
                directive = row.get("directive", "")
                m = re.fullmatch(r"`([^`]+)`", directive)
                name_args = (m.group(1) if m else directive).split(" ", 1)
                term = "\\fB" + esc(name_args[0]) + "\\fR"
                if len(name_args) > 1:
                    term += " \\fI" + esc(name_args[1]) + "\\fR"
                out.append(".TP")
                out.append(term)
                out.append(guard("Context: " + inline_md(row.get("context", "")) +
                                 "; default: " + inline_md(row.get("default", "")) + "."))
                out.append(".br")
                out.append(guard(inline_md(row.get("meaning", ""))))
                i += 1
            continue
        if re.match(r"^- ", line):                    # a bullet list item
            flush()
            item = [line[2:].strip()]
            i += 1
            while i < len(lines) and lines[i].startswith("  ") and lines[i].strip():
                item.append(lines[i].strip())
                i += 1
            out.append(".IP \\(bu 2")
            out.append(guard(inline_md(" ".join(item))))
            continue
        if not line.strip():
            flush()
        else:
            para.append(line.strip())
        i += 1
    flush()
    return out


def module_page(directives_md, template, version):
    with open(directives_md, encoding="utf-8") as f:
        md = f.read()
    return fill(template, {"VERSION": version,
                           "DIRECTIVES": directives_roff(md)})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gmcpctl", required=True, help="the built gmcpctl binary")
    ap.add_argument("--directives", required=True, help="docs/directives.md")
    ap.add_argument("--out", required=True, help="output directory")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(HERE, "gmcpctl.8.in"), encoding="utf-8") as f:
        version, page = gmcpctl_page(a.gmcpctl, f.read())
    with open(os.path.join(a.out, "gmcpctl.8"), "w", encoding="utf-8") as f:
        f.write(page)
    with open(os.path.join(HERE, "mod_gemini_mcp.7.in"), encoding="utf-8") as f:
        page = module_page(a.directives, f.read(), version)
    with open(os.path.join(a.out, "mod_gemini_mcp.7"), "w", encoding="utf-8") as f:
        f.write(page)


if __name__ == "__main__":
    main()
