#!/usr/bin/env python3
"""The glue's shape, checked (`make check` runs this):

* no import cycle among the modules of src/ — neither between the concerns (src/X.rs, src/X/)
  nor between the files of one concern;
* src/nginx/ (the nginx layer) imports nothing of the mesh above it;
* no file in src/ over 400 lines;
* no function outside src/nginx/ takes a raw `*mut ngx_rtmp_session_t`;
* no `static mut` but the module objects nginx requires (src/module.rs) and nginx's own
  globals declared in src/nginx/.

Usage: scripts/check-layers.py [src-dir]. Exit 1 with one line per finding.
"""

import os
import re
import sys

MAX_LINES = 400


def strip_comments(text):
    out = []
    for line in text.split("\n"):
        s = line.lstrip()
        if s.startswith("//"):
            continue
        out.append(re.sub(r"\s//.*$", "", line))
    return "\n".join(out)


def module_of(rel):
    """src-relative path -> module path ('http::hold', 'http' for http/mod.rs, '' for lib.rs)."""
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return "::".join(parts)


def resolve(mod, path, modules):
    """The longest known module a `crate::`/`super::` path names, from module `mod`."""
    segs = path.split("::")
    if segs[0] == "crate":
        base = []
        segs = segs[1:]
    else:
        base = mod.split("::") if mod else []
        while segs and segs[0] == "super":
            base = base[:-1]
            segs = segs[1:]
        if segs and segs[0] == "self":
            segs = segs[1:]
    best = None
    for i in range(len(segs) + 1):
        cand = "::".join(base + segs[:i])
        if cand in modules:
            best = cand
    return best


def find_cycles(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    files = {}
    for root, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(root, n)
                files[os.path.relpath(p, src)] = open(p, encoding="utf-8").read()
    modules = {module_of(r): r for r in files}
    problems = []
    file_graph, top_graph = {}, {}
    path_re = re.compile(r"\b((?:crate|super)(?:::\w+)+|crate::\{[^}]*\}|super::\{[^}]*\})")
    for rel, text in sorted(files.items()):
        mod = module_of(rel)
        code = strip_comments(text)
        lines = text.count("\n")
        if lines > MAX_LINES:
            problems.append(f"{src}/{rel}: {lines} lines (at most {MAX_LINES})")
        in_nginx = mod == "nginx" or mod.startswith("nginx::")
        if not in_nginx and re.search(r"\*mut\s+ngx_rtmp_session_t", code):
            problems.append(f"{src}/{rel}: a raw *mut ngx_rtmp_session_t outside src/nginx/")
        for m in re.finditer(r"\bstatic\s+mut\s+(\w+)", code):
            if rel != "module.rs" and not in_nginx:
                problems.append(f"{src}/{rel}: static mut {m.group(1)} (only module objects, in module.rs)")
        for m in path_re.finditer(code):
            text_path = m.group(1)
            # `crate::{a, b::c}` / `super::{x, y}`: each member is a path of its own.
            if "{" in text_path:
                head, inner = text_path.split("::{", 1)
                members = [head + "::" + x.strip().split(" ")[0] for x in inner.rstrip("}").split(",") if x.strip()]
            else:
                members = [text_path]
            for p in members:
                target = resolve(mod, p, modules)
                if target is None or target == mod:
                    continue
                # A parent naming its child (`mod x; pub use x::Y`) is not an upward arrow.
                file_graph.setdefault(mod, set()).add(target)
                a, b = mod.split("::")[0], target.split("::")[0]
                if a and b and a != b:
                    top_graph.setdefault(a, set()).add(b)
                    if a == "nginx":
                        problems.append(f"{src}/{rel}: the nginx layer imports crate::{target}")
    for c in find_cycles(top_graph):
        problems.append("import cycle among concerns: " + " <-> ".join(c))
    for c in find_cycles(file_graph):
        if len({x.split("::")[0] for x in c}) == 1:
            problems.append("import cycle among files: " + " <-> ".join(c))
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"layers: {len(files)} files, {len(top_graph)} concerns importing others, no cycle")


if __name__ == "__main__":
    main()
