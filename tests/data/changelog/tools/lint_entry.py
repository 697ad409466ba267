"""A tiny Markdown linter for the changelog example: tabs and over-long lines.

Usage: python tools/lint_entry.py [--max-line N] PATH...
Prints PATH:LINE: problem for each finding; exits 1 if there was any, else 0.
"""

import sys


def main(argv):
    max_line = 100
    if argv[:1] == ["--max-line"]:
        max_line = int(argv[1])
        argv = argv[2:]
    if not argv:
        print("usage: lint_entry.py [--max-line N] PATH...", file=sys.stderr)
        return 2
    found = 0
    for path in argv:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                line = line.rstrip("\n")
                if "\t" in line:
                    print(f"{path}:{n}: tab character")
                    found += 1
                if len(line) > max_line:
                    print(f"{path}:{n}: line is {len(line)} characters long, over {max_line}")
                    found += 1
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
