"""Number formatting, text/markdown tables and tool versions, shared by the benchmarks."""

from __future__ import annotations

import platform
import subprocess


def fmt(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.4f}"


def render_text(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for n, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_md(table: list[list[str]]) -> str:
    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"

    return "\n".join([line(table[0]), "|" + "|".join("---" for _ in table[0]) + "|"] + [line(r) for r in table[1:]])


def noise_note(whole_run: float, worst: float) -> str:
    return (
        f"Other processes used {whole_run:.0%} of the machine's CPU during the run (worst scenario {worst:.0%})"
        + ("; numbers are noisy." if whole_run > 0.05 else ".")
    )


def tool_versions(peer: bool = True) -> dict[str, str]:
    def first_line(cmd):
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (res.stdout or res.stderr).strip().splitlines()[0]
        except Exception as exc:  # noqa: BLE001 - informational only
            return f"unknown ({exc})"

    import granian

    from dockyard import __version__

    versions = {"dockyard": __version__, "granian": granian.__version__, "python": platform.python_version()}
    if peer:
        versions["docker-registry"] = first_line(["docker-registry", "--version"])
    versions["skopeo"] = first_line(["skopeo", "--version"])
    versions["wrk"] = first_line(["wrk", "-v"])
    versions["hey"] = first_line(["dpkg-query", "-W", "-f", "${Version}", "hey"])
    return versions


def publish(table: list[list[str]], misses: list[str], versions: dict[str, str], noise: str,
            title: list[str], header: str, out=None) -> None:
    """Print a run's table the one way every benchmark does, and write it as Markdown to `out`
    (a Path) with `header` (one paragraph saying what was run) above it."""
    print()
    for line in title:
        print(line)
    print(render_text(table))
    print(noise)
    if misses:
        print("\nMISSED TARGETS:")
        for m in misses:
            print(f"  - {m}")
    print("\n" + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if out:
        out.write_text(f"{header} {noise}\n\n" + render_md(table) + "\n\n"
                       + "\n".join(f"- {k}: {v}" for k, v in versions.items()) + "\n")
