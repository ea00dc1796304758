#!/usr/bin/env python
"""Hidden-style tasks from what this machine has: man pages as a BEIR folder (query: a page's NAME one-liner;
document: the first 80 words of its DESCRIPTION; relevant: its own page), SimLex-999 as a pairs file (gensim's test copy). Scored in docs/export.md, "Heads that truncate":

    python scripts/hidden_style_tasks.py OUT    # OUT/manpages (beir:), OUT/simlex999.tsv (pairs:)

A tenth of /usr/share/man/man1 by the sha256 of the file name, pages with a NAME one-liner of 3+ words and a
DESCRIPTION of 20+ words, duplicate one-liners dropped.
"""
import gzip, json, re, hashlib, sys
from pathlib import Path

import gensim

out = Path(sys.argv[1] if len(sys.argv) > 1 else "tasks")
pages = sorted(Path("/usr/share/man/man1").glob("*.gz"))
pages = [p for p in pages if int(hashlib.sha256(p.name.encode()).hexdigest()[:8], 16) % 10 == 0]

def clean(line):
    line = re.sub(r"\\f[A-Z\[\]]|\\f\(..|\\\*\(..|\\\(..|\\[&|^/,]", "", line)
    line = line.replace("\\-", "-").replace("\\ ", " ").replace("\\e", "\\")
    return re.sub(r"\s+", " ", line).strip()

items = []
for page in pages:
    try:
        text = gzip.open(page, "rt", errors="replace").read()
    except OSError:
        continue
    if text.startswith(".so "):
        continue
    sections, current = {}, None
    for line in text.splitlines():
        match = re.match(r'^\.S[Hh]\s+"?([^"]*)"?', line)
        if match:
            current = match.group(1).strip().upper(); sections[current] = []; continue
        if current and not line.startswith(('.\\"', "'\\\"")):
            body = re.sub(r"^\.(B|I|BR|IR|RB|RI|BI|IB|SM|SB)\s+", "", line)
            if body.startswith("."):
                continue
            sections[current].append(clean(body))
    name = " ".join(sections.get("NAME", []))
    description = " ".join(sections.get("DESCRIPTION", []))
    if " - " not in name or len(description.split()) < 20:
        continue
    query = name.split(" - ", 1)[1].strip()
    if len(query.split()) < 3:
        continue
    items.append((page.name, query, " ".join(description.split()[:80])))

seen, unique = set(), []
for item in items:
    if item[1].lower() not in seen:
        seen.add(item[1].lower()); unique.append(item)
folder = out / "manpages"
(folder / "qrels").mkdir(parents=True, exist_ok=True)
with open(folder / "corpus.jsonl", "w") as corpus, open(folder / "queries.jsonl", "w") as queries:
    for number, (name, query, document) in enumerate(unique):
        corpus.write(json.dumps({"_id": f"d{number}", "title": "", "text": document}) + "\n")
        queries.write(json.dumps({"_id": f"q{number}", "text": query}) + "\n")
(folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{n}\td{n}\t1\n" for n in range(len(unique))))
simlex = Path(gensim.__file__).parent / "test" / "test_data" / "simlex999.txt"
rows = ["text1\ttext2\tscore"] + [line for line in simlex.read_text().splitlines() if line and not line.startswith("#")]
(out / "simlex999.tsv").write_text("\n".join(rows) + "\n")
print(len(unique), "man pages;", len(rows) - 1, "SimLex pairs")
